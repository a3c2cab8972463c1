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

from shared.config import Settings
from shared.errors import InvalidRequest, PermissionDenied
from shared.lanes import Lane

OTHER_FEATURE = "other"


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
