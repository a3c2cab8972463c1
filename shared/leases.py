"""Attempt leases: how the gateway knows an admitted job is really in someone's hands.

Every dispatch (an admission) gets a fresh token, stored under the job's lease key with a TTL and
carried by the Celery message. The worker claims the lease when it starts (extending it to the
attempt's total timeout) and drops it when the attempt is recorded. An admitted job with no lease
was orphaned (worker killed, message lost with a Redis restart, scheduler killed before sending):
the reconciler dispatches it again with a new token, and a stale message that still turns up finds
a token that is not its own and is dropped before it can call the provider.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from importlib import resources

import redis

from shared.keys import Keys
from shared.queues import Envelope

_lua = resources.files("shared.lua")
_CLAIM = _lua.joinpath("claim_lease.lua").read_text()
_RELEASE = _lua.joinpath("release_lease.lua").read_text()


class AttemptLeases:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def grant(self, envs: Iterable[Envelope], ttl_s: float) -> None:
        """Give each admitted envelope a new token and hold the lease for it (one round trip)."""
        with self.r.pipeline(transaction=False) as pipe:
            for env in envs:
                env.token = uuid.uuid4().hex
                pipe.set(self.keys.lease(env.id), env.token, px=int(ttl_s * 1000))
            pipe.execute()

    def claim(self, env: Envelope, ttl_s: float) -> bool:
        return bool(self._claim(keys=[self.keys.lease(env.id)], args=[env.token, int(ttl_s * 1000)]))

    def release(self, env: Envelope) -> None:
        self._release(keys=[self.keys.lease(env.id)], args=[env.token])

    def held(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs have a live lease."""
        if not job_ids:
            return set()
        values = self.r.mget([self.keys.lease(j) for j in job_ids])
        return {j for j, v in zip(job_ids, values, strict=True) if v}
