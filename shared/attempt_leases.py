"""Attempt leases: how the gateway knows an admitted job is really in someone's hands.

Every dispatch (an admission) gets a fresh token, stored under the job's lease key with a TTL and
carried by the Celery message. The worker claims the lease when it starts (extending it to the
attempt's total timeout) and drops it when the attempt is recorded. An admitted job with no lease
was orphaned (worker killed, message lost with a Redis restart, scheduler killed before sending):
recovery dispatches it again with a new token, and a stale message that still turns up finds
a token that is not its own and is dropped before it can call the provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import redis
from redis.exceptions import NoScriptError

from shared.envelope import Envelope
from shared.keys import Keys
from shared.lua import script
from shared.redis_batch import ScriptCall

LEASES_HEADER = "gw_leases"  # the Celery message header naming its dispatches: "job:token job:token ..."
_CLAIM = script("lease_claim")
_RELEASE = script("lease_release")
_RENEW = script("lease_renew")
_EXTEND = script("lease_extend")


class AttemptLeases:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._renew = client.register_script(_RENEW)
        self._extend = client.register_script(_EXTEND)

    def grant(self, envs: Iterable[Envelope], ttl_s: float) -> None:
        """Give each admitted envelope a new token and hold the lease for it (one round trip)."""
        with self.r.pipeline(transaction=False) as pipe:
            for env in envs:
                self.grant_in(pipe, env, ttl_s)
            pipe.execute()

    def grant_in(self, pipe: Any, env: Envelope, ttl_s: float) -> None:
        """``grant`` for one envelope, as a command added to a round trip made anyway."""
        env.token = uuid.uuid4().hex
        pipe.set(self.keys.lease(env.id), env.token, px=int(ttl_s * 1000))

    def claim(self, env: Envelope, ttl_s: float, *, count: tuple[str, int] | None = None) -> bool:
        """Take the lease for this dispatch. ``count`` = (counter key, TTL s): add 1 to it in the same
        step when the claim succeeds (the retry budget's attempt count, ``RetryPolicy.attempt_counter``)."""
        return self.claim_call(env, ttl_s, count=count).run()

    def claim_call(self, env: Envelope, ttl_s: float, *, count: tuple[str, int] | None = None) -> ScriptCall:
        """``claim`` as a script call to send in a batch with others."""
        keys: list[str] = [self.keys.lease(env.id)]
        args: list[str | int] = [env.token, int(ttl_s * 1000)]
        if count is not None:
            keys.append(count[0])
            args.append(count[1])
        return ScriptCall(self._claim, keys, args, bool)

    def release(self, env: Envelope, *, also: Callable[[Any], Any] | None = None) -> None:
        """Drop the lease unless a newer dispatch holds it. ``also(pipe)`` adds commands that go in the
        same round trip (its errors are raised after the lease is dealt with)."""
        key = self.keys.lease(env.id)
        with self.r.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._release.sha, 1, key, env.token)  # not the Script: no SCRIPT EXISTS trip
            if also is not None:
                also(pipe)
            replies = pipe.execute(raise_on_error=False)
        if isinstance(replies[0], NoScriptError):  # Redis restarted and forgot it: load it and run it
            self._release(keys=[key], args=[env.token])
        elif isinstance(replies[0], Exception):
            raise replies[0]
        for reply in replies[1:]:
            if isinstance(reply, Exception):
                raise reply

    def release_call(self, env: Envelope) -> ScriptCall:
        """``release`` as a script call to send in a batch with others."""
        return ScriptCall(self._release, [self.keys.lease(env.id)], [env.token])

    def extend(self, env: Envelope, ttl_s: float) -> None:
        """Give ``env``'s lease ``ttl_s`` more seconds, if it still holds its token (one round trip)."""
        self.renew([env.id], [env.token], ttl_s)

    def renew(self, job_ids: list[str], tokens: list[str], ttl_s: float) -> list[bool]:
        """The heartbeat (``execution.lease_keeper``): renew these leases under these tokens, one round
        trip; per job, whether the lease is still this holder's."""
        held = self._renew(keys=[self.keys.lease(j) for j in job_ids], args=[*tokens, int(ttl_s * 1000)])
        return [bool(h) for h in held]

    def extend_waiting(self, job_ids: list[str], tokens: list[str], ttl_s: float) -> list[bool]:
        """Extend these dispatches' leases where they still hold these tokens (never take one back), one
        round trip; per job, whether it was extended (``lease_extend.lua``)."""
        if not job_ids:
            return []
        kept = self._extend(keys=[self.keys.lease(j) for j in job_ids], args=[*tokens, int(ttl_s * 1000)])
        return [bool(k) for k in kept]

    def held(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs have a live lease."""
        if not job_ids:
            return set()
        values = self.r.mget([self.keys.lease(j) for j in job_ids])
        return {j for j, v in zip(job_ids, values, strict=True) if v}


def leases_header(pairs: Iterator[tuple[str, str]]) -> str:
    """The header value for a message carrying these (job id, token) dispatches."""
    return " ".join(f"{job_id}:{token}" for job_id, token in pairs)


def parse_leases(value: str) -> list[tuple[str, str]]:
    """The (job id, token) pairs of a header value; anything malformed is skipped."""
    pairs = []
    for item in value.split():
        job_id, _, token = item.partition(":")
        if job_id and token:
            pairs.append((job_id, token))
    return pairs
