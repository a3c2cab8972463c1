"""Managing tenants and keys: what ``/v1/admin/tenants``, ``/v1/admin/keys`` and ``gateway tenants|keys``
do, in one place, each change written with an audit record (``admin_actions``: who, what, when) in its
transaction and followed by a new auth epoch, so every process drops what it cached (``shared.directory``).

A tenant's settings are the config file's (``tenants.<id>``, or ``tenant_defaults``) with what was set
here over them: weight, limits, lanes, dollar budgets, per-feature caps and budgets. ``null`` clears a
field set here (the file's value applies again). A key gets its own RPM/TPM limits, a dollar budget, an
expiry, the models and features it may use and the highest lane; ``rotate`` gives it a new secret under
the same id (its budget, limits and usage history stay with it), ``revoke`` ends it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.config import DollarBudget, ModelAccess, Settings, TenantConfig
from shared.db import audit as audit_log
from shared.db import tenants as store
from shared.db.models import AdminAction, ApiKey, Tenant, utcnow
from shared.directory import merged_tenant
from shared.errors import Conflict, InvalidRequest, echo
from shared.lanes import Lane
from shared.schemas import Feature, Storable

TenantBase = Callable[[str], TenantConfig]  # the config file's settings of a tenant (or tenant_defaults)
MAX_LIST = 1000


@dataclass(frozen=True)
class Actor:
    """Who made a change and how: ``X-Gateway-Operator`` (or the operators' key) through the api, the
    login name through the CLI."""

    name: str
    via: str


# -- what callers send ------------------------------------------------------------------------------


class _Body(Storable):
    model_config = ConfigDict(extra="forbid")


class FeatureSettings(_Body):
    lane: Lane | None = None
    hard_tpm: int | None = Field(None, gt=0, le=10**12)
    budget: DollarBudget | None = None


class TenantSettings(_Body):
    """What may be set on a tenant over the config file; a field sent as null goes back to the file's."""

    weight: float | None = Field(None, gt=0, le=1_000_000, allow_inf_nan=False)
    soft_tpm: int | None = Field(None, gt=0, le=10**12)
    hard_tpm: int | None = Field(None, gt=0, le=10**12)
    max_lane: Lane | None = None
    unknown_features: Literal["allow", "refuse"] | None = None
    budget: DollarBudget | None = None
    features: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")], FeatureSettings] | None = Field(
        None, max_length=1000)

    def overrides(self) -> dict[str, Any]:
        """The fields sent, as stored: a top-level null clears the field; nulls inside a value are dropped."""
        data = self.model_dump(mode="json", include=self.model_fields_set)
        if data.get("features"):
            data["features"] = {name.lower(): cfg for name, cfg in data["features"].items()}
        return {field: _without_nulls(value) for field, value in data.items()}


def _tenant_id(value: str) -> str:
    if not store.TENANT_ID_PATTERN.fullmatch(value):
        raise ValueError(f"invalid tenant id {echo(value)}: use 1-63 lowercase letters, digits, '-' or '_', "
                         "starting with a letter or digit")
    return value


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


TenantId = Annotated[str, AfterValidator(_tenant_id),
                     WithJsonSchema({"type": "string", "pattern": store.TENANT_ID_PATTERN.pattern})]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]*$")]


class TenantCreate(TenantSettings):
    id: TenantId
    name: Name | None = None


class TenantUpdate(TenantSettings):
    name: Name | None = None


class KeySettings(_Body):
    """What may be set on a key; a field sent as null clears it (no limit of the key's own)."""

    name: Name | None = None
    max_lane: Lane | None = None
    rpm: int | None = Field(None, gt=0, le=10**9)
    tpm: int | None = Field(None, gt=0, le=10**12)
    budget: DollarBudget | None = None
    expires_at: datetime | None = Field(None, description="ISO 8601; after it the key authenticates no more")
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(None, max_length=200)
    allowed_features: list[Feature] | None = Field(None, max_length=200)
    models: ModelAccess | None = Field(None, description="deployments or models its jobs may be routed to "
                                       "(allow: only these; deny: never these); null: the tenant's")

    @field_validator("expires_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


class KeyCreate(KeySettings):
    tenant: TenantId


# -- views ------------------------------------------------------------------------------------------


def tenant_view(tenant: Tenant, base: TenantBase, active_keys: int) -> dict[str, Any]:
    effective = merged_tenant(base(tenant.id), tenant.settings or {})
    return {"id": tenant.id, "object": "gateway.tenant", "name": tenant.name, "disabled": tenant.disabled,
            "created_at": _iso(tenant.created_at), "updated_at": _iso(tenant.updated_at),
            "settings": effective.model_dump(mode="json", exclude_none=True),
            "overrides": tenant.settings or {}, "active_keys": active_keys}


def key_view(key: ApiKey, now: datetime | None = None) -> dict[str, Any]:
    now = now or utcnow()
    status = "revoked" if key.revoked_at else "expired" if key.expires_at and key.expires_at <= now else "active"
    return {"id": key.public_id, "object": "gateway.key", "tenant": key.tenant_id, "name": key.name,
            "prefix": key.prefix, "status": status, "max_lane": key.max_lane, "rpm": key.rpm, "tpm": key.tpm,
            "budget": key.budget, "expires_at": _iso(key.expires_at), "allowed_models": key.allowed_models,
            "models": key.models, "allowed_features": key.allowed_features, "created_at": _iso(key.created_at),
            "updated_at": _iso(key.updated_at), "revoked_at": _iso(key.revoked_at)}


def action_view(action: AdminAction) -> dict[str, Any]:
    return {"id": action.id, "at": _iso(action.at), "actor": action.actor, "via": action.via,
            "action": action.action, "target": action.target, "details": action.details}


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


# -- the audit trail --------------------------------------------------------------------------------


def audit(session: Session, actor: Actor, action: str, target: str, details: dict[str, Any] | None = None, *,
          tenant: str, key_id: int | None = None) -> None:
    """Record a change in the transaction that makes it: both land, or neither. It goes to ``admin_actions``
    (the operators' list) and to the tenant's hash-chained audit log (``shared.db.audit``)."""
    session.add(AdminAction(at=utcnow(), actor=actor.name[:200], via=actor.via[:200], action=action,
                            target=target, details=details))
    audit_log.record_admin(session, tenant, action, f"{actor.via.split(' ', 1)[0]}:{actor.name}"[:200],
                           target=target, key_id=key_id, change=details)


def list_actions(session: Session, *, target: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    query = select(AdminAction).order_by(AdminAction.id.desc()).limit(min(limit, MAX_LIST))
    if target is not None:
        query = query.where(AdminAction.target == target)
    return [action_view(a) for a in session.scalars(query)]


# -- tenants ----------------------------------------------------------------------------------------


def _active_keys(session: Session, tenant_id: str) -> int:
    return sum(k.revoked_at is None for k in store.list_keys(session, tenant_id))


def _checked_overrides(base: TenantConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides that make a valid tenant with the file's settings (a 400 naming the field otherwise)."""
    try:
        merged_tenant(base, overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        raise InvalidRequest(f"{where}: {err['msg']}", param=where) from None
    return overrides


def create_tenant(session: Session, base: TenantBase, epoch: store.AuthEpoch, actor: Actor,
                  body: TenantCreate) -> dict[str, Any]:
    overrides = {k: v for k, v in body.overrides().items() if k not in ("id", "name") and v is not None}
    tenant = store.create_tenant(session, body.id, body.name)
    tenant.settings = _checked_overrides(base(body.id), overrides) or None
    session.flush()
    audit(session, actor, "tenant.create", f"tenant:{tenant.id}", {"name": tenant.name, "settings": overrides},
          tenant=tenant.id)
    epoch.replace_after_commit(session)
    return tenant_view(tenant, base, 0)


def update_tenant(session: Session, base: TenantBase, epoch: store.AuthEpoch, actor: Actor, tenant_id: str,
                  body: TenantUpdate) -> dict[str, Any]:
    tenant = store.get_tenant(session, tenant_id)
    sent = body.overrides()
    if "name" in sent:
        tenant.name = sent.pop("name") or tenant.id
    overrides = dict(tenant.settings or {})
    for field, value in sent.items():
        if value is None:
            overrides.pop(field, None)
        elif field == "features":
            overrides["features"] = {**overrides.get("features", {}), **value}
        else:
            overrides[field] = value
    tenant.settings = _checked_overrides(base(tenant.id), overrides) or None
    tenant.updated_at = utcnow()
    session.flush()
    audit(session, actor, "tenant.update", f"tenant:{tenant.id}", {"changed": body.model_dump(
        mode="json", include=body.model_fields_set)}, tenant=tenant.id)
    epoch.replace_after_commit(session)
    return tenant_view(tenant, base, _active_keys(session, tenant.id))


def set_tenant_disabled(session: Session, base: TenantBase, epoch: store.AuthEpoch, actor: Actor,
                        tenant_id: str, disabled: bool) -> dict[str, Any]:
    tenant = store.set_tenant_disabled(session, tenant_id, epoch, disabled)
    tenant.updated_at = utcnow()
    audit(session, actor, "tenant.disable" if disabled else "tenant.enable", f"tenant:{tenant.id}", tenant=tenant.id)
    return tenant_view(tenant, base, _active_keys(session, tenant.id))


def get_tenant(session: Session, base: TenantBase, tenant_id: str) -> dict[str, Any]:
    return tenant_view(store.get_tenant(session, tenant_id), base, _active_keys(session, tenant_id))


def list_tenants(session: Session, base: TenantBase) -> list[dict[str, Any]]:
    return [tenant_view(t, base, sum(k.revoked_at is None for k in t.keys)) for t in store.list_tenants(session)]


# -- keys -------------------------------------------------------------------------------------------


def _check_models(settings: Settings, models: list[str] | None, param: str = "allowed_models") -> None:
    known = set(settings.models) | {d.name for d in settings.deployments} | {d.model for d in settings.deployments}
    unknown = [m for m in models or () if m not in known]
    if unknown:
        raise InvalidRequest(f"{param}: unknown model {echo(unknown[0])}; the gateway serves "
                             f"{', '.join(sorted(settings.models))}", param=param)


def _apply_key_settings(key: ApiKey, body: KeySettings, settings: Settings) -> dict[str, Any]:
    """Set what ``body`` sent on ``key``; the changes, for the audit trail."""
    sent = body.model_dump(mode="json", include=body.model_fields_set)
    if "expires_at" in sent and body.expires_at is not None and body.expires_at <= utcnow():
        raise InvalidRequest(f"expires_at {body.expires_at.isoformat()} has already passed; give a future time "
                             "(or revoke the key)", param="expires_at")
    _check_models(settings, body.allowed_models)
    for field in ("name", "max_lane", "rpm", "tpm", "expires_at", "allowed_models", "allowed_features"):
        if field in body.model_fields_set:
            setattr(key, field, getattr(body, field))
    if "name" in body.model_fields_set and body.name is None:
        key.name = "default"
    if "models" in body.model_fields_set:
        _check_models(settings, [*(body.models.allow or []), *body.models.deny] if body.models else None,
                      param="models")
        key.models = body.models.model_dump(mode="json") if body.models else None
    if "budget" in body.model_fields_set:
        key.budget = body.budget.model_dump(mode="json", exclude_none=True) if body.budget else None
    return sent


def create_key(session: Session, settings: Settings, epoch: store.AuthEpoch, actor: Actor,
               body: KeyCreate) -> tuple[dict[str, Any], str]:
    """A new key and its plaintext, shown this once."""
    key, plaintext = store.create_key(session, body.tenant, body.name or "default", max_lane=body.max_lane)
    details = _apply_key_settings(key, body, settings)
    session.flush()
    audit(session, actor, "key.create", f"key:{key.public_id}", {"prefix": key.prefix, **details},
          tenant=key.tenant_id, key_id=key.id)
    epoch.replace_after_commit(session)
    return key_view(key), plaintext


def update_key(session: Session, settings: Settings, epoch: store.AuthEpoch, actor: Actor, key_ref: str,
               body: KeySettings) -> dict[str, Any]:
    key = store.find_key(session, key_ref)
    details = _apply_key_settings(key, body, settings)
    key.updated_at = utcnow()
    session.flush()
    audit(session, actor, "key.update", f"key:{key.public_id}", details, tenant=key.tenant_id, key_id=key.id)
    epoch.replace_after_commit(session)
    return key_view(key)


def rotate_key(session: Session, epoch: store.AuthEpoch, actor: Actor, key_ref: str) -> tuple[dict[str, Any], str]:
    """A new secret for the same key: the old one stops working at once; id, limits, budget and usage stay."""
    key = store.find_key(session, key_ref)
    if key.revoked_at is not None:
        raise Conflict(f"key {key.public_id} is revoked; create a new key instead", param="key_id")
    old_prefix = key.prefix
    plaintext = store.KEY_PREFIX + secrets.token_urlsafe(32)
    key.key_hash, key.prefix, key.updated_at = store.hash_key(plaintext), plaintext[:store.DISPLAY_PREFIX_LEN], utcnow()
    session.flush()
    audit(session, actor, "key.rotate", f"key:{key.public_id}", {"old_prefix": old_prefix, "prefix": key.prefix},
          tenant=key.tenant_id, key_id=key.id)
    epoch.replace_after_commit(session)
    return key_view(key), plaintext


def revoke_key(session: Session, epoch: store.AuthEpoch, actor: Actor, key_ref: str) -> dict[str, Any]:
    key = store.revoke_key(session, key_ref, epoch)
    audit(session, actor, "key.revoke", f"key:{key.public_id}", {"prefix": key.prefix},
          tenant=key.tenant_id, key_id=key.id)
    return key_view(key)


def get_key(session: Session, key_ref: str) -> dict[str, Any]:
    return key_view(store.find_key(session, key_ref))


def list_keys(session: Session, tenant: str | None = None) -> list[dict[str, Any]]:
    if tenant is not None:
        store.get_tenant(session, tenant)
    now = utcnow()
    return [key_view(k, now) for k in store.list_keys(session, tenant)]
