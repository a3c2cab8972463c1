"""Leader lease in Redis: exactly one scheduler admits at a time; a standby takes over on expiry."""

from __future__ import annotations

import time

import redis

from shared.lua import script

_LEASE_LUA = script("leader_hold")


class LeaderLease:
    def __init__(self, client: redis.Redis, key: str, instance: str, ttl_s: float = 5.0) -> None:
        self.r = client
        self.key = key
        self.instance = instance
        self.ttl_ms = int(ttl_s * 1000)
        self._script = client.register_script(_LEASE_LUA)
        self._valid_until = 0.0

    def hold(self) -> bool:
        """Take or renew the lease; True while this instance is the leader."""
        now = time.monotonic()
        if self._script(keys=[self.key], args=[self.instance, self.ttl_ms]):
            # Count from before the call: our view of the lease never outlives Redis's.
            self._valid_until = now + self.ttl_ms / 1000
            return True
        self._valid_until = 0.0
        return False

    def still_valid(self, margin_s: float = 0.5) -> bool:
        """Whether the lease certainly has not expired yet (checked before each admission batch)."""
        return time.monotonic() + margin_s < self._valid_until

    def release(self) -> None:
        if self.r.get(self.key) == self.instance:
            self.r.delete(self.key)
