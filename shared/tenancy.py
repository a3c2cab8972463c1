"""What a tenant's key may ask for: which lane a job runs in, and which feature names it may use.

The tenant always comes from the key; the lane and feature come from the caller, so both are held to
the tenant's config (``TenantConfig``) here, once per request, before anything is queued:

- a feature pinned to a lane in config runs there, whatever the caller asked;
- otherwise the caller's priority, which may not be above the key's or the tenant's ``max_lane``
  (a 403 that says which lanes it may use); no priority means the route's default, lowered to it;
- a feature the tenant does not list is accepted (no feature cap applies to it) or refused, per the
  tenant's ``unknown_features``; either way it is reported to Prometheus as ``other``, so no caller
  can grow the metrics' label space.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.config import DollarBudget, Settings
from shared.errors import AuthError, InvalidRequest, PermissionDenied, echo
from shared.lanes import Lane

OTHER_FEATURE = "other"


@dataclass(frozen=True)
class KeyPolicy:
    """What the operators set on one key (``gateway keys``, ``/v1/admin/keys``), under its tenant's own
    settings: the highest lane, its own RPM/TPM, a dollar budget, an expiry, and the models and features
    it may use (None: any)."""

    key_id: int
    tenant: str
    public_id: str = ""
    max_lane: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget: DollarBudget | None = None
    expires_at: datetime | None = None
    allowed_models: tuple[str, ...] | None = None
    allowed_features: tuple[str, ...] | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


def check_key(policy: KeyPolicy | None, now: datetime) -> None:
    """An expired key authenticates no more (a 401 that says when it expired)."""
    if policy is not None and policy.expired(now):
        assert policy.expires_at is not None
        raise AuthError(f"API key expired at {policy.expires_at.isoformat()}: ask the gateway operator for a new "
                        "key or a later expiry", code="expired_api_key")


def check_key_use(policy: KeyPolicy | None, model: str, feature: str) -> None:
    """A key held to some models or features may ask for those only (a 403 that lists them)."""
    if policy is None:
        return
    if policy.allowed_models is not None and model not in policy.allowed_models:
        raise PermissionDenied(f"This key may not use the model {echo(model)}; it may use "
                               f"{', '.join(policy.allowed_models) or '(none)'}.", param="model",
                               code="model_not_allowed")
    if policy.allowed_features is not None and feature not in policy.allowed_features:
        raise PermissionDenied(f"This key may not be used for the feature {echo(feature)}; it may be used for "
                               f"{', '.join(policy.allowed_features) or '(none)'}.", param="feature",
                               code="feature_not_allowed")


def allowed_lanes(settings: Settings, tenant: str, key_max_lane: str | None = None) -> list[Lane]:
    """The lanes a key may ask for, highest priority first."""
    ceiling = settings.tenant(tenant).max_lane
    if key_max_lane is not None and Lane(key_max_lane).rank > ceiling.rank:
        ceiling = Lane(key_max_lane)
    return ceiling.and_below()


def resolve_lane(settings: Settings, tenant: str, feature: str, requested: Lane | None, default: Lane,
                 key_max_lane: str | None = None) -> Lane:
    """The lane a job runs in (see the module docstring); PermissionDenied for a lane the key may not use."""
    feature_cfg = settings.tenant(tenant).features.get(feature)
    if feature_cfg is not None and feature_cfg.lane is not None:
        return feature_cfg.lane
    allowed = allowed_lanes(settings, tenant, key_max_lane)
    if requested is None:
        return default if default in allowed else allowed[0]
    if requested not in allowed:
        raise PermissionDenied(
            f"This key may not use the {requested} lane; it may use {', '.join(allowed)}. "
            "Ask the gateway operator to raise the tenant's or the key's max_lane.", param="priority",
            code="lane_not_allowed")
    return Lane(requested)


def check_feature(settings: Settings, tenant: str, feature: str) -> None:
    """Refuse a feature the tenant does not list when its policy is ``unknown_features: refuse``."""
    cfg = settings.tenant(tenant)
    if feature in cfg.features or cfg.unknown_features == "allow":
        return
    known = ", ".join(sorted(cfg.features)) or "(none)"
    raise InvalidRequest(f"Unknown feature {feature!r} for this tenant; its features are: {known}.",
                         param="feature", code="unknown_feature")


def metric_feature(settings: Settings, tenant: str, feature: str) -> str:
    """The feature as a metrics label: its name when configured for the tenant, else ``other``."""
    return feature if feature in settings.tenant(tenant).features or feature == "default" else OTHER_FEATURE
