"""The waiting queues: one Redis list of envelopes (``shared.envelope``) per lane x tenant, kept with
the counts the api and the scheduler read (jobs and estimated tokens waiting per lane), a set of the
job ids Redis holds (for recovery), and a sorted set of retries waiting out their backoff."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, cast

import redis

from shared.envelope import Envelope, Unreadable, read_entry
from shared.keys import Keys
from shared.lua import script

_POP_LUA = script("queue_pop")
CANCELLED_KEPT_S = 86_400
_PROMOTE_LUA = script("queue_promote")


class WaitingQueues:
    """Push and pop envelopes; every push wakes the scheduler."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._pop = client.register_script(_POP_LUA)
        self._promote = client.register_script(_PROMOTE_LUA)

    def push(self, env: Envelope, *, front: bool = False) -> None:
        k = self.keys
        with self.r.pipeline(transaction=True) as pipe:
            queue = k.waiting(env.lane, env.tenant)
            (pipe.lpush if front else pipe.rpush)(queue, env.dumps())
            pipe.sadd(k.active_tenants(env.lane), env.tenant)
            pipe.incr(k.waiting_count(env.lane))
            pipe.incrby(k.waiting_tokens(env.lane), env.tokens)
            pipe.sadd(k.queued_ids, env.id)
            pipe.lpush(k.wake, "1")
            pipe.ltrim(k.wake, 0, 0)
            pipe.execute()

    def push_many(self, envs: Sequence[Envelope]) -> None:
        """``push`` for many envelopes in one MULTI/EXEC: the same lists, counters and sets as one
        push each, in order, with a command per queue and lane (not per envelope) and one wake."""
        if not envs:
            return
        k = self.keys
        by_queue: dict[tuple[str, str], list[str]] = defaultdict(list)
        count: Counter[str] = Counter()
        tokens: Counter[str] = Counter()
        for env in envs:
            by_queue[(env.lane, env.tenant)].append(env.dumps())
            count[env.lane] += 1
            tokens[env.lane] += env.tokens
        with self.r.pipeline(transaction=True) as pipe:
            for (lane, tenant), payloads in by_queue.items():
                pipe.rpush(k.waiting(lane, tenant), *payloads)
                pipe.sadd(k.active_tenants(lane), tenant)
            for lane, n in count.items():
                pipe.incrby(k.waiting_count(lane), n)
                pipe.incrby(k.waiting_tokens(lane), tokens[lane])
            pipe.sadd(k.queued_ids, *(env.id for env in envs))
            pipe.lpush(k.wake, "1")
            pipe.ltrim(k.wake, 0, 0)
            pipe.execute()

    def delay(self, env: Envelope) -> None:
        """Park a retry until ``env.not_before``; the scheduler promotes it to its queue's front."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.delayed, {env.dumps(): env.not_before})
            pipe.sadd(self.keys.queued_ids, env.id)
            pipe.execute()

    def promote_due(self, now: float, limit: int = 1000) -> int:
        """Move due retries to the front of their queues (two round trips: read them, then move
        them in one script that gets every key it touches). An entry that is not an envelope is
        dropped from the delayed set; its job stays queued in SQL and expires at its deadline."""
        k = self.keys
        due = cast(list[str], self.r.zrangebyscore(k.delayed, "-inf", now, start=0, num=limit))
        keys: list[str] = [k.delayed, k.wake]
        args: list[str | int] = []
        unreadable: list[str] = []
        for raw in due:
            env = read_entry(raw)
            if isinstance(env, Unreadable):
                unreadable.append(raw)
                continue
            keys += [k.waiting(env.lane, env.tenant), k.active_tenants(env.lane), k.waiting_count(env.lane),
                     k.waiting_tokens(env.lane)]
            args += [raw, env.tenant, env.tokens]
        if unreadable:
            self.r.zrem(k.delayed, *unreadable)
        return int(self._promote(keys=keys, args=args)) if args else 0

    def pop(self, lane: str, tenant: str, count: int = 1) -> list[Envelope | Unreadable]:
        k = self.keys
        raw = self._pop(keys=[k.waiting(lane, tenant), k.active_tenants(lane), k.waiting_count(lane),
                              k.waiting_tokens(lane), k.queued_ids], args=[tenant, count])
        return [read_entry(item) for item in raw]

    def heads(self, lane: str, tenants: list[str]) -> dict[str, Envelope | Unreadable]:
        """The oldest waiting envelope of each tenant, without removing it (one round trip)."""
        with self.r.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                pipe.lindex(self.keys.waiting(lane, tenant), 0)
            raw = pipe.execute()
        return {t: read_entry(item) for t, item in zip(tenants, raw, strict=True) if item}

    def waiting_tokens(self, lane: str) -> int:
        return int(self.r.get(self.keys.waiting_tokens(lane)) or 0)

    def active_tenants(self, lane: str) -> list[str]:
        return sorted(cast(set[str], self.r.smembers(self.keys.active_tenants(lane))))

    def waiting_in_lane(self, lane: str) -> int:
        return int(self.r.get(self.keys.waiting_count(lane)) or 0)

    def depth(self, lane: str, tenant: str) -> int:
        return int(self.r.llen(self.keys.waiting(lane, tenant)))

    def wait_for_wake_in(self, pipe: Any, timeout: float) -> None:
        """``wait_for_wake`` as a command of ``pipe`` (after commands that must go in the same round trip)."""
        pipe.blpop([self.keys.wake], timeout=timeout)

    def wait_for_wake(self, timeout: float) -> bool:
        """Block until something is pushed (or ``timeout`` seconds pass)."""
        return self.r.blpop([self.keys.wake], timeout=timeout) is not None

    def cancel(self, job_ids: Sequence[str]) -> None:
        """Jobs cancelled in the store while they wait here: the scheduler drops them from their queues'
        heads (``cancelled_of``) instead of admitting them. The set lives a day past its last cancel: a
        job that was popped meanwhile leaves its id behind, and the store's conditional update had
        refused to admit it anyway."""
        if not job_ids:
            return
        with self.r.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.cancelled, *job_ids)
            pipe.expire(self.keys.cancelled, CANCELLED_KEPT_S)
            pipe.lpush(self.keys.wake, "1")  # a blocked head may have been among them
            pipe.ltrim(self.keys.wake, 0, 0)
            pipe.execute()

    def cancelled_of(self, job_ids: Sequence[str]) -> set[str]:
        """Which of these jobs were cancelled while waiting (one round trip)."""
        if not job_ids:
            return set()
        flags = self.r.smismember(self.keys.cancelled, list(job_ids))
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    def forget_cancelled(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self.r.srem(self.keys.cancelled, *job_ids)

    def missing(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs Redis does not hold in any queue (lost: re-queue them from SQL)."""
        if not job_ids:
            return []
        held = self.r.smismember(self.keys.queued_ids, job_ids)
        return [j for j, h in zip(job_ids, held, strict=True) if not h]
