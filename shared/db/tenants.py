"""Tenants and their API keys: creation, listing, revocation and authentication.

Only a key's SHA-256 digest is stored (see ``ApiKey``); authentication hashes the presented key and
looks the digest up through a unique index, so no comparison ever runs over the secret itself.

The api caches authenticated keys in process (``KeyCache``), trusted only while the *auth epoch* in
Redis is the one they were cached under. Every change that can refuse a key (revoke, disable)
writes a new random epoch once its transaction commits, so every api process re-checks the store on
its next request: revoked means 401 at once, in every process. A random value, not a counter, so a
Redis restart that forgets the epoch can never bring back an old one.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from sqlalchemy import event, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.config import DollarBudget
from shared.db.models import ApiKey, Job, Tenant, utcnow
from shared.errors import AuthError, Conflict, InvalidRequest, NotFound, echo
from shared.keys import Keys
from shared.lanes import LANE_NAMES
from shared.queues import WaitingQueues
from shared.tenancy import KeyPolicy, check_key

KEY_PREFIX = "gw-"
DISPLAY_PREFIX_LEN = 12
TENANT_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
AUTH_CACHE_TTL_S = 30.0  # the most a cached key outlives its revocation if the epoch could not be written
AUTH_CACHE_MAX_KEYS = 10_000

log = logging.getLogger("gateway.auth")


def hash_key(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _check_tenant_id(tenant_id: str) -> None:
    if not TENANT_ID_PATTERN.fullmatch(tenant_id):
        raise InvalidRequest(
            f"invalid tenant id {tenant_id!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit",
            param="tenant",
        )


def create_tenant(session: Session, tenant_id: str, name: str | None = None) -> Tenant:
    """A new tenant; Conflict if the id is taken."""
    _check_tenant_id(tenant_id)
    tenant = Tenant(id=tenant_id, name=name or tenant_id, disabled=False)
    try:
        with session.begin_nested():
            session.add(tenant)
    except IntegrityError:
        raise Conflict(f"tenant {tenant_id!r} already exists", param="tenant") from None
    return tenant


def get_tenant(session: Session, tenant_id: str) -> Tenant:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {echo(tenant_id)} does not exist; create it with `gateway tenants create` or "
                       "POST /v1/admin/tenants", param="tenant")
    return tenant


def ensure_tenant(session: Session, tenant_id: str, name: str | None = None) -> Tenant:
    """The tenant, created if missing (for config-declared and demo tenants); safe to call twice."""
    tenant = session.get(Tenant, tenant_id)
    if tenant is not None:
        return tenant
    try:
        return create_tenant(session, tenant_id, name)
    except Conflict:  # created concurrently by another process
        return get_tenant(session, tenant_id)


def list_tenants(session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.id)))


def set_tenant_disabled(session: Session, tenant_id: str, epoch: AuthEpoch, disabled: bool = True) -> Tenant:
    """Disabling a tenant makes every one of its keys fail authentication at once, and cancels the
    jobs it has waiting (queued, not yet sent): nothing is sent or billed for it afterwards."""
    tenant = get_tenant(session, tenant_id)
    tenant.disabled = disabled
    session.flush()
    if disabled:
        _cancel_queued(session, Job.tenant_id == tenant_id, f"tenant {tenant_id!r} was disabled", epoch)
    epoch.replace_after_commit(session)
    return tenant


def _cancel_queued(session: Session, which: object, reason: str, epoch: AuthEpoch) -> int:
    """Cancel the queued jobs ``which`` selects; once committed, the scheduler is told to drop them from
    their queues' heads (``WaitingQueues.cancel``). Should that fail, they are dropped at admission all
    the same: it is a conditional update from queued, and their reservations are refunded."""
    now = utcnow()
    cancelled = session.execute(
        update(Job).where(which, Job.status == "queued")  # type: ignore[arg-type]
        .values(status="cancelled", finished_at=now, updated_at=now,
                error={"type": "cancelled", "message": f"cancelled before it was sent: {reason}"})
        .returning(Job.id)
        .execution_options(synchronize_session=False)).scalars().all()
    if cancelled:
        epoch.cancelled_after_commit(session, list(cancelled))
    return len(cancelled)


def create_key(session: Session, tenant_id: str, name: str = "default",
               max_lane: str | None = None, models: dict[str, Any] | None = None) -> tuple[ApiKey, str]:
    """A new key for the tenant and its plaintext, which is never stored and cannot be shown again.
    ``max_lane``: the highest-priority lane the key may ask for (None: whatever its tenant may);
    ``models``: ``{"allow": [...] | None, "deny": [...]}``, deployments or models its jobs may (not) use."""
    get_tenant(session, tenant_id)
    if max_lane is not None and max_lane not in LANE_NAMES:
        raise InvalidRequest(f"unknown lane {max_lane!r}; use one of {', '.join(LANE_NAMES)}", param="max_lane")
    plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(
        tenant_id=tenant_id, name=name, prefix=plaintext[:DISPLAY_PREFIX_LEN], key_hash=hash_key(plaintext),
        max_lane=max_lane, models=models,
    )
    session.add(key)
    session.flush()
    return key, plaintext


def list_keys(session: Session, tenant_id: str | None = None) -> list[ApiKey]:
    query = select(ApiKey).order_by(ApiKey.tenant_id, ApiKey.id)
    if tenant_id is not None:
        query = query.where(ApiKey.tenant_id == tenant_id)
    return list(session.scalars(query))


def find_key(session: Session, key_ref: str) -> ApiKey:
    """A key by its public id (``key_...``, what the management API names it), numeric id or displayed prefix."""
    if key_ref.startswith("key_"):
        matches = list(session.scalars(select(ApiKey).where(ApiKey.public_id == key_ref)))
    elif key_ref.isdigit():
        key = session.get(ApiKey, int(key_ref))
        matches = [key] if key else []
    else:
        matches = list(session.scalars(select(ApiKey).where(ApiKey.prefix == key_ref)))
    if not matches:
        raise NotFound(f"no API key {echo(key_ref)}; see `gateway keys list` or GET /v1/admin/keys", param="key_id")
    if len(matches) > 1:
        ids = ", ".join(m.public_id for m in matches)
        raise Conflict(f"prefix {echo(key_ref)} matches keys {ids}; name the key by its id instead", param="key_id")
    return matches[0]


def revoke_key(session: Session, key_id_or_prefix: str, epoch: AuthEpoch) -> ApiKey:
    """Revoke by numeric id or by the displayed prefix; revoking twice keeps the first time. The jobs
    the key has waiting (queued, not yet sent) are cancelled: nothing is sent or billed for it afterwards."""
    key = find_key(session, key_id_or_prefix)
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.flush()
    _cancel_queued(session, (Job.tenant_id == key.tenant_id) & (Job.key_id == key.id),
                   f"its API key {key.prefix}… was revoked", epoch)
    epoch.replace_after_commit(session)
    return key


@dataclass(frozen=True)
class Identity:
    """Who a tenant key speaks for: its tenant, its id, the highest lane it may use (None: the tenant's),
    and what else the operators set on it (``policy``: its limits, budget, expiry, models and features)."""

    tenant: str
    key_id: int | None = None
    max_lane: str | None = None
    allow_models: tuple[str, ...] | None = None  # the key's own models policy (``shared.routing``)
    deny_models: tuple[str, ...] = ()
    policy: KeyPolicy | None = None


def policy_of(key: ApiKey) -> KeyPolicy:
    """A key row's settings as the budget tree and the api enforce them."""
    return KeyPolicy(
        key_id=key.id, tenant=key.tenant_id, public_id=key.public_id, max_lane=key.max_lane, rpm=key.rpm,
        tpm=key.tpm, budget=DollarBudget.model_validate(key.budget) if key.budget else None,
        expires_at=key.expires_at,
        allowed_models=tuple(key.allowed_models) if key.allowed_models is not None else None,
        allowed_features=tuple(key.allowed_features) if key.allowed_features is not None else None)


def key_policy(session: Session, key_id: int) -> KeyPolicy | None:
    key = session.get(ApiKey, key_id)
    return policy_of(key) if key is not None else None


def tenant_overrides(session: Session) -> dict[str, dict[str, Any]]:
    """What the management API set over the config file, per tenant that has any."""
    rows = session.execute(select(Tenant.id, Tenant.settings).where(Tenant.settings.is_not(None)))
    return {tenant: settings for tenant, settings in rows if settings}


def authenticate(session: Session, plaintext_key: str, now: datetime | None = None) -> Identity:
    """The identity behind ``plaintext_key``; AuthError says why there is none (``reason`` for counting)."""
    row = session.execute(
        select(ApiKey, Tenant.disabled).join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.key_hash == hash_key(plaintext_key))
    ).first()
    if row is None:
        raise AuthError("invalid API key: send a key created with `gateway keys create` as 'Bearer <key>'",
                        code="invalid_api_key")
    key, disabled = row
    if key.revoked_at is not None:
        raise AuthError("API key revoked: ask the gateway operator for a new key", code="revoked_api_key")
    if disabled:
        raise AuthError(f"tenant disabled: tenant {key.tenant_id!r} may not make calls; ask the gateway operator",
                        code="tenant_disabled")
    check_key(policy_of(key), now or utcnow())
    return identity_of(key)


def identity_of(key: ApiKey) -> Identity:
    """Who a key row speaks for (its checks aside): also how work started under a key is resumed."""
    allow = (key.models or {}).get("allow")
    return Identity(key.tenant_id, key.id, key.max_lane, tuple(allow) if allow is not None else None,
                    tuple((key.models or {}).get("deny") or ()), policy_of(key))


# -- the api's key cache -------------------------------------------------------------------------


class AuthEpoch:
    """The random string in Redis every api compares its cached keys against (see the module docstring)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self.key = keys.auth_epoch

    def cancelled_after_commit(self, session: Session, job_ids: list[str]) -> None:
        """The jobs a disabled tenant or a revoked key had waiting: once the change is committed, the
        scheduler drops them from its queues (``shared.queues.WaitingQueues.cancel``)."""
        def tell(_session: Session) -> None:
            try:
                WaitingQueues(self.redis, self.keys).cancel(job_ids)
            except (redis.RedisError, OSError) as exc:
                log.warning("could not tell the scheduler of %d cancelled jobs (%s); it drops them when it "
                            "reaches them", len(job_ids), exc)
        event.listen(session, "after_commit", tell, once=True)

    def replace_after_commit(self, session: Session) -> None:
        """Once the change is committed (never before: an api could re-cache the old answer), replace it."""
        event.listen(session, "after_commit", self._replace, once=True)

    def _replace(self, _session: Session) -> None:
        try:
            self.redis.set(self.key, uuid.uuid4().hex)
        except (redis.RedisError, OSError) as exc:
            log.error("could not tell the api processes that a key was revoked or a tenant disabled (%s): "
                      "keys they cached stay valid for up to %.0f s", exc, AUTH_CACHE_TTL_S)


class KeyCache:
    """Identities of recently authenticated keys (by digest), each valid under one auth epoch for a TTL."""

    def __init__(self, ttl_s: float = AUTH_CACHE_TTL_S, max_keys: int = AUTH_CACHE_MAX_KEYS) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._entries: dict[str, tuple[Identity, str, float]] = {}  # digest -> identity, epoch, expires
        self._lock = threading.Lock()

    def peek(self, digest: str) -> tuple[Identity, str] | None:
        """(identity, epoch) cached for the key, not yet checked against the current epoch."""
        entry = self._entries.get(digest)
        if entry is None or entry[2] < time.monotonic():
            return None
        return entry[0], entry[1]

    def identity(self, digest: str, epoch: str) -> Identity | None:
        """The cached identity when it was cached under ``epoch`` and has not expired."""
        entry = self.peek(digest)
        return entry[0] if entry is not None and entry[1] == epoch else None

    def remember(self, digest: str, identity: Identity, epoch: str) -> None:
        with self._lock:
            if len(self._entries) >= self.max_keys:
                self._entries.clear()  # many distinct keys: start over rather than track recency
            self._entries[digest] = (identity, epoch, time.monotonic() + self.ttl_s)
