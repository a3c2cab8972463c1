"""What the SQL store says about tenants and keys, as each process's budget tree and admission need it.

The management API (``/v1/admin/tenants``, ``/v1/admin/keys``) and ``gateway tenants|keys`` change
tenants and keys in the store, and every change replaces the auth epoch in Redis (``AuthEpoch``). Each
process keeps what it read under the epoch it read it at:

- a key's settings (``KeyPolicy``: its RPM/TPM, dollar budget, ...), loaded by id when first needed;
  the api hands over the ones it authenticates, so its hot path does not read the store for them;
- the tenants' settings: the config file's ``tenants`` with what the management API set over them
  (weight, limits, budgets ...). They are merged into the process's ``Settings`` in one assignment,
  so every reader (fair queuing's weights, the budget tree's limits, the lane rules) sees them at once.

A new epoch drops the keys and re-reads the tenants. The api sees the epoch on every request (it reads
it anyway); the scheduler and the workers look at most once a second (``poll``).

It also answers what a dollar budget has spent in a window, from the usage rollups, for the buckets
Redis does not hold (a new window, or Redis restarted empty).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import redis
from pydantic import ValidationError
from sqlalchemy import Engine

from shared.budget.buckets import Scope
from shared.budget.windows import WindowKind, window_at
from shared.config import Settings, TenantConfig
from shared.db import tenants as tenant_store
from shared.db import usage
from shared.db.session import session_scope
from shared.keys import Keys
from shared.tenancy import KeyPolicy

log = logging.getLogger("gateway.directory")
POLL_S = 1.0
MAX_KEYS = 10_000


def merged_tenant(base: TenantConfig, overrides: dict[str, Any]) -> TenantConfig:
    """``base`` with the fields the management API set; a feature's fields merge into the file's feature."""
    data = base.model_dump(exclude_unset=True)
    features = {name: cfg.model_dump(exclude_unset=True) for name, cfg in base.features.items()}
    for name, cfg in (overrides.get("features") or {}).items():
        features[name] = {**features.get(name, {}), **cfg}
    data.update({k: v for k, v in overrides.items() if k != "features"})
    data["features"] = features
    return TenantConfig.model_validate(data)


class Directory:
    def __init__(self, settings: Settings, engine: Engine, client: redis.Redis, keys: Keys,
                 poll_s: float = POLL_S) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = client
        self.epoch_key = keys.auth_epoch
        self.poll_s = poll_s
        self._file_tenants = dict(settings.tenants)
        self._epoch: str | None = None
        self._keys: dict[int, KeyPolicy | None] = {}
        self._polled = 0.0
        self._lock = threading.Lock()

    def file_tenant(self, name: str) -> TenantConfig:
        """A tenant's settings in the config file (``tenant_defaults`` for one it does not list)."""
        return self._file_tenants.get(name) or self.settings.tenant_defaults

    # -- keys ----------------------------------------------------------------------------------------

    def key(self, key_id: int) -> KeyPolicy | None:
        """The key's settings (None for a key the store does not have)."""
        if key_id in self._keys:
            return self._keys[key_id]
        with session_scope(self.engine, readonly=True) as db:
            policy = tenant_store.key_policy(db, key_id)
        self.remember(key_id, policy)
        return policy

    def remember(self, key_id: int, policy: KeyPolicy | None) -> None:
        if len(self._keys) >= MAX_KEYS:
            self._keys = {}
        self._keys[key_id] = policy

    # -- the epoch -----------------------------------------------------------------------------------

    def observe(self, epoch: str | None) -> None:
        """The auth epoch as just read: a new one means a tenant or key changed, so re-read."""
        if epoch is None or epoch == self._epoch:
            return
        with self._lock:
            if epoch == self._epoch:
                return
            self._keys = {}
            self._apply_tenants()
            self._epoch = epoch

    def poll(self) -> None:
        """``observe`` the epoch, reading it at most every ``poll_s`` (the scheduler and the workers)."""
        now = time.monotonic()
        if now - self._polled < self.poll_s:
            return
        self._polled = now
        try:
            epoch = self.redis.get(self.epoch_key)
        except (redis.RedisError, OSError):
            return  # what was read stays in force; Redis coming back brings the epoch back
        self.observe(str(epoch or ""))

    def _apply_tenants(self) -> None:
        try:
            with session_scope(self.engine, readonly=True) as db:
                overrides = tenant_store.tenant_overrides(db)
        except Exception:  # noqa: BLE001 - the store down or not migrated yet: keep what is in force
            log.exception("could not read the tenants' settings; the ones in force stay")
            return
        tenants = dict(self._file_tenants)
        for name, changes in overrides.items():
            try:
                tenants[name] = merged_tenant(self.file_tenant(name), changes)
            except ValidationError as exc:
                log.error("tenant %s: the settings stored for it are invalid, the file's apply: %s", name, exc)
        self.settings.tenants = tenants  # one assignment: readers see the old dict or the new one

    # -- what a budget spent -------------------------------------------------------------------------

    def spent_usd(self, scope: Scope, window_end: float) -> float:
        """What the budget of ``scope`` spent in its window (the one ending at ``window_end``), per the
        usage rollups."""
        kind = cast(WindowKind, scope.window)
        window = window_at(kind, datetime.fromtimestamp(window_end, UTC) - timedelta(seconds=1),
                           self.settings.billing.zone)
        with session_scope(self.engine, readonly=True) as db:
            return usage.spent_usd(db, tenant=str(scope.tenant), feature=scope.feature, key_id=scope.key_id,
                                   start=window.start, end=window.end)
