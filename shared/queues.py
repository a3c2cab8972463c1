"""The job envelope and the waiting queues (one Redis list per lane x tenant).

The envelope is what travels through Redis and Celery: everything a worker needs to send one
attempt, so the hot path never reads the SQL store. The SQL row stays the durable truth.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from shared.keys import Keys
from shared.lanes import Lane
from shared.lua import script

_POP_LUA = script("queue_pop")
_PROMOTE_LUA = script("queue_promote")


@dataclass
class Envelope:
    id: str
    tenant: str
    feature: str
    lane: Lane
    model: str
    chain: list[str]
    request: dict[str, Any]
    deadline: float
    enqueued_at: float = field(default_factory=time.time)
    attempt: int = 1
    estimate: int = 0
    deployment: str | None = None
    reply_to: str | None = None
    est_input: int = 0
    est_output: int = 0
    not_before: float = 0.0
    probe: bool = False
    token: str = ""
    ticket: str = ""

    def dumps(self) -> str:
        """The JSON of ``asdict(self)``, byte for byte; orjson reads the dataclass without copying it."""
        return orjson.dumps(self).decode()

    @classmethod
    def loads(cls, raw: str | bytes) -> Envelope:
        return cls(**orjson.loads(raw))

    def expired(self, now: float | None = None) -> bool:
        return (now or time.time()) >= self.deadline


# The fields whose type the scheduler and the worker rely on before anything else looks at a job.
_TYPES: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("id", str), ("tenant", str), ("feature", str), ("lane", str), ("model", str), ("chain", list),
    ("request", dict), ("deadline", (int, float)), ("attempt", int), ("estimate", int),
)


@dataclass
class Unreadable:
    """A queued entry this version cannot run (corrupted, or written by an older version): the scheduler
    and the workers fail its job with ``reason`` (when its id is known) and go on with the others."""

    id: str
    tenant: str
    reason: str
    reply_to: str | None = None
    estimate: int = 0

    def expired(self, now: float | None = None) -> bool:
        return False


def read_entry(raw: str | bytes | dict[str, Any]) -> Envelope | Unreadable:
    """The envelope in ``raw`` (JSON, or its dict from a Celery message), or why it is not one."""
    fields: Any = None
    try:
        fields = orjson.loads(raw) if isinstance(raw, str | bytes) else raw
        env = Envelope(**{**fields, "lane": Lane(fields["lane"])})
        wrong = [name for name, kind in _TYPES if not isinstance(getattr(env, name), kind)
                 or isinstance(getattr(env, name), bool)]
        if wrong or not all(isinstance(d, str) for d in env.chain) or not env.chain:
            raise TypeError(f"fields of the wrong type: {', '.join(wrong) or 'chain'}")
        return env
    except Exception as exc:  # noqa: BLE001 - whatever is wrong with it, it is one job's problem
        known = fields if isinstance(fields, dict) else {}
        reply_to = known.get("reply_to")
        return Unreadable(id=str(known.get("id") or ""), tenant=str(known.get("tenant") or ""),
                          reason=f"its queued envelope is unreadable ({type(exc).__name__}: {str(exc)[:200]})",
                          reply_to=reply_to if isinstance(reply_to, str) else None)


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
            pipe.incrby(k.waiting_tokens(env.lane), env.estimate)
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
            tokens[env.lane] += env.estimate
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
        due = self.r.zrangebyscore(k.delayed, "-inf", now, start=0, num=limit)
        keys, args, unreadable = [k.delayed, k.wake], [], []
        for raw in due:
            env = read_entry(raw)
            if isinstance(env, Unreadable):
                unreadable.append(raw)
                continue
            keys += [k.waiting(env.lane, env.tenant), k.active_tenants(env.lane), k.waiting_count(env.lane),
                     k.waiting_tokens(env.lane)]
            args += [raw, env.tenant, env.estimate]
        if unreadable:
            self.r.zrem(k.delayed, *unreadable)
        return int(self._promote(keys=keys, args=args)) if args else 0

    def next_due_in(self, now: float) -> float:
        """Seconds until the earliest parked retry is due (inf when none)."""
        first = self.r.zrange(self.keys.delayed, 0, 0, withscores=True)
        return max(0.0, first[0][1] - now) if first else float("inf")

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
        return sorted(self.r.smembers(self.keys.active_tenants(lane)))

    def waiting_in_lane(self, lane: str) -> int:
        return int(self.r.get(self.keys.waiting_count(lane)) or 0)

    def depth(self, lane: str, tenant: str) -> int:
        return int(self.r.llen(self.keys.waiting(lane, tenant)))

    def wait_for_wake(self, timeout: float) -> bool:
        """Block until something is pushed (or ``timeout`` seconds pass)."""
        return self.r.blpop([self.keys.wake], timeout=timeout) is not None

    def missing(self, job_ids: list[str]) -> list[str]:
        """Which of these jobs Redis does not hold in any queue (lost: re-queue them from SQL)."""
        if not job_ids:
            return []
        held = self.r.smismember(self.keys.queued_ids, job_ids)
        return [j for j, h in zip(job_ids, held, strict=True) if not h]
