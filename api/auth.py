"""Who is calling: every route's key is checked here, before its body is read.

Routes read their bodies themselves, after this dependency (``api.body``), so a request with a bad
key costs a header parse, never a body: 16 concurrent 60 MB bodies with bogus keys once took the api
to 1.4 GB. Failures are cheaper than successes:

- a key seen lately is answered from the in-process ``KeyCache``, valid under the auth epoch it was
  cached with (``shared.db.tenants``); the submit path re-reads the epoch in the round trip it makes
  anyway, every other route reads it here (one GET);
- a key that failed lately is refused from a small cache of bad digests (no SQL, no Redis);
- each source address may fail ``api.auth_failures_per_minute`` times (a token bucket); past that its
  unknown keys get a 429 without a lookup. Failures are counted (``gateway_auth_failures_total``)
  and logged with the key's first characters only.

The operators' key (``GATEWAY_ADMIN_KEY``) is recognised here too; it is not a tenant key.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from dataclasses import dataclass

import redis
from sqlalchemy import Engine

from shared.config import Settings
from shared.db.models import utcnow
from shared.db.session import session_scope
from shared.db.tenants import DISPLAY_PREFIX_LEN, Identity, KeyCache, authenticate, hash_key
from shared.directory import Directory
from shared.errors import AuthError, Overloaded, PermissionDenied
from shared.keys import Keys
from shared.tenancy import check_key

log = logging.getLogger("gateway.auth")

BAD_KEY_TTL_S = 10.0
BAD_KEYS_MAX = 10_000
SOURCES_MAX = 10_000


@dataclass(frozen=True)
class Caller:
    """A checked key: a tenant's (``identity``) or the operators' (``admin``). ``epoch`` is the auth
    epoch it was last confirmed under; None when it came from the cache and is confirmed later."""

    api_key: str
    identity: Identity | None = None
    epoch: str | None = None
    admin: bool = False

    @property
    def tenant(self) -> str:
        if self.identity is None:
            raise PermissionDenied("This route needs a tenant's API key, not the operators' key.")
        return self.identity.tenant

    @property
    def key_id(self) -> int | None:
        return self.identity.key_id if self.identity else None


class _FailureBudget:
    """Failed authentications each source may have: ``per_minute``, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._sources: dict[str, tuple[float, float]] = {}  # source -> level, at (monotonic)
        self._lock = threading.Lock()

    def _level(self, source: str, now: float) -> float:
        level, at = self._sources.get(source, (self.capacity, now))
        return min(self.capacity, level + (now - at) * self.rate)

    def exhausted(self, source: str) -> float:
        """Seconds until the source may fail again (0 when it may now)."""
        level = self._level(source, time.monotonic())
        return 0.0 if level >= 1 else (1 - level) / self.rate

    def spend(self, source: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._sources) >= SOURCES_MAX:
                self._sources.clear()
            self._sources[source] = (max(0.0, self._level(source, now) - 1), now)


class Authenticator:
    """Keys to callers, with the caches and the throttle described in the module docstring."""

    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys, engine: Engine,
                 directory: Directory | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.directory = directory
        self.redis = client
        self.epoch_key = keys.auth_epoch
        self.cache = KeyCache()
        self.failures = _FailureBudget(settings.api.auth_failures_per_minute)
        self._bad: dict[str, tuple[float, str, str]] = {}  # digest -> expires, code, message
        self._last_epoch: str | None = None
        self.on_failure = lambda reason: None  # the api counts failures (api.metrics)

    def admin_key(self) -> str | None:
        return self.settings.api.admin_key()

    def is_admin(self, api_key: str) -> bool:
        expected = self.admin_key()
        return expected is not None and hmac.compare_digest(api_key.encode(), expected.encode())

    def cached(self, api_key: str) -> Caller | None:
        """A caller from the cache alone (no I/O), to be confirmed against the epoch later, or None. A key
        that expired since it was cached is refused here (401)."""
        seen = self.cache.peek(hash_key(api_key))
        if seen is None:
            return None
        check_key(seen[0].policy, utcnow())
        return Caller(api_key, seen[0])

    def check(self, api_key: str, source: str) -> Caller:
        """The caller behind ``api_key``, confirmed against the current epoch (runs in a thread)."""
        if self.is_admin(api_key):
            return Caller(api_key, admin=True)
        self._refuse_known_bad(hash_key(api_key))
        return self.confirm(api_key, self._read_epoch(), source)

    def confirm(self, api_key: str, epoch: str | None, source: str = "") -> Caller:
        """The caller under ``epoch`` (read by the caller of this): from the cache when it was cached
        under it, else from the store. ``epoch`` None (Redis unreadable): the store, nothing cached."""
        digest = hash_key(api_key)
        if epoch is not None and (identity := self.cache.identity(digest, epoch)) is not None:
            check_key(identity.policy, utcnow())
            return Caller(api_key, identity, epoch)
        wait_s = self.failures.exhausted(source)
        if wait_s > 0:
            self.on_failure("throttled")
            raise Overloaded(f"Too many failed authentications from this address; retry after {wait_s:.0f}s.",
                             retry_after=wait_s, code="too_many_auth_failures")
        try:
            with session_scope(self.engine, readonly=True) as db:
                identity = authenticate(db, api_key)
        except AuthError as exc:
            self._remember_bad(digest, exc, api_key, source)
            raise
        if epoch is not None:
            self.cache.remember(digest, identity, epoch)
        if self.directory is not None and identity.key_id is not None:
            self.directory.remember(identity.key_id, identity.policy)  # the budget tree's copy: no second read
        return Caller(api_key, identity, epoch)

    def _read_epoch(self) -> str | None:
        try:
            epoch = str(self.redis.get(self.epoch_key) or "")
        except (redis.RedisError, OSError):
            return None  # the epoch can't be read: ask the store, trust no cached answer
        self.saw_epoch(epoch)
        return epoch

    def saw_epoch(self, epoch: str) -> None:
        """A new epoch means a key or tenant changed: a key refused before may be good now, and the
        tenants' and keys' settings are read again (``shared.directory``)."""
        if epoch != self._last_epoch:
            self._last_epoch = epoch
            self._bad.clear()
        if self.directory is not None:
            self.directory.observe(epoch)

    def _refuse_known_bad(self, digest: str) -> None:
        bad = self._bad.get(digest)
        if bad is not None and bad[0] > time.monotonic():
            self.on_failure(bad[1])
            raise AuthError(bad[2], code=bad[1])

    def _remember_bad(self, digest: str, exc: AuthError, api_key: str, source: str) -> None:
        code = exc.code or "invalid_api_key"
        self.failures.spend(source)
        self.on_failure(code)
        log.warning("authentication failed from %s: %s (key %s…)", source or "?", code,
                    api_key[:DISPLAY_PREFIX_LEN] if api_key.startswith("gw-") else api_key[:3])
        if len(self._bad) >= BAD_KEYS_MAX:
            self._bad.clear()
        self._bad[digest] = (time.monotonic() + BAD_KEY_TTL_S, code, exc.message)
