"""Leader lease in Redis: exactly one scheduler admits at a time; a standby takes over on expiry.

The lease is short (``scheduler.leader_lease_s``, 1.5 s by default) so a standby takes over within
that long of a leader's death. The leader renews it whenever less than a third of it is left, and
while idle in the same round trip as its wait for work (``hold_in``), so the short lease costs no
more round trips than a long one. A standby does not poll: the lease tells it how long the holder's
lease has left, and it sleeps until then.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from redis.exceptions import NoScriptError

from shared.lua import script

_LEASE_LUA = script("leader_hold")
MARGIN = 0.25  # of the lease: what it must still have left for a round to start without renewing it


class LeaderLease:
    def __init__(self, client: redis.Redis, key: str, instance: str, ttl_s: float = 1.5) -> None:
        self.r = client
        self.key = key
        self.instance = instance
        self.ttl_ms = int(ttl_s * 1000)
        self._script = client.register_script(_LEASE_LUA)
        self._valid_until = 0.0
        self.holder_left_s = 0.0  # when another holds it: how long its lease has left

    @property
    def longest_wait_s(self) -> float:
        """The longest an idle leader may wait for work: the lease is renewed as the wait begins and
        must outlive it by ``MARGIN`` (a round after the wait needs no renewal of its own)."""
        return self.ttl_ms / 2000

    def hold(self) -> bool:
        """Take or renew the lease; True while this instance is the leader."""
        sent = time.monotonic()
        return self._took(self._script(keys=[self.key], args=[self.instance, self.ttl_ms]), sent)

    def hold_in(self, pipe: Any) -> float:
        """``hold`` as the first command of ``pipe`` (the leader's wait for work); pass what it answered
        to ``took`` after the pipeline ran (with ``raise_on_error=False``). Returns the time it was sent.
        By its digest: a script object in a pipeline would cost a SCRIPT EXISTS every time."""
        pipe.evalsha(self._script.sha, 1, self.key, self.instance, self.ttl_ms)
        return time.monotonic()

    def took(self, reply: Any, sent: float) -> bool:
        if isinstance(reply, NoScriptError):  # Redis restarted and forgot the script: load it, hold again
            return self.hold()
        if isinstance(reply, Exception):
            raise reply
        return self._took(reply, sent)

    def _took(self, reply: Any, sent: float) -> bool:
        if int(reply) == -1:
            # Count from before the call: our view of the lease never outlives Redis's.
            self._valid_until = sent + self.ttl_ms / 1000
            return True
        self._valid_until = 0.0
        self.holder_left_s = max(int(reply), 0) / 1000
        return False

    def still_valid(self) -> bool:
        """Whether the lease certainly outlives a round (checked before each admission batch)."""
        return time.monotonic() + self.ttl_ms * MARGIN / 1000 < self._valid_until

    def release(self) -> None:
        if self.r.get(self.key) == self.instance:
            self.r.delete(self.key)
