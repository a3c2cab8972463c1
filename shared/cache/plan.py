"""What the cache may do with one request: read it, store its answer, both, or neither (a bypass).

Decided once, at acceptance, from the settings and the request: a request that asks for sampling
(``temperature`` above 0, or unset, which every provider reads as 1) gets a different answer each
time, so it is neither read nor stored unless its feature allows it (``any_temperature``); a caller
may ask for a fresh answer (``Cache-Control: no-cache``, still stored) or for no caching at all
(``no-store``). The plan travels with the job (``JobSpec.cache``) so whoever ends its attempt can
fill the cache without reading the settings again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from shared.cache.canonical import canonical, digest, last_user_text, without_last_turn
from shared.config import Settings
from shared.tenancy import metric_feature

CacheMode = Literal["default", "no-cache", "no-store"]
# A longer last turn is a document, not a question: its near misses are beyond what the guard reads.
SEMANTIC_MAX_CHARS = 2000


@dataclass(frozen=True)
class SemanticAsk:
    """A semantic lookup: the scope whose entries may match, the text to compare, the bar to pass."""

    scope: str
    text: str
    threshold: float


@dataclass(frozen=True)
class CachePlan:
    tenant: str
    feature: str
    label: str  # the feature as a metrics label (``shared.tenancy.metric_feature``)
    digest: str = ""
    ttl_s: float = 0.0
    read: bool = False
    store: bool = False
    semantic: SemanticAsk | None = None
    bypass: str | None = None  # why the cache is not read, when it is not

    def fill(self, vector: str | None = None) -> dict[str, Any] | None:
        """What the job carries for the end of its attempt (``JobSpec.cache``): None when nothing is stored.
        ``vector`` is its question's embedding when the lookup made one (``Record.pack``), so whoever
        stores the answer (a worker, often) need not load the model to make it again."""
        if not self.store:
            return None
        sem = self.semantic
        return {"digest": self.digest, "ttl_s": self.ttl_s, "label": self.label,
                "scope": sem.scope if sem else None, "text": sem.text if sem else None,
                "vector": vector if sem else None}


def plan_for(settings: Settings, tenant: str, feature: str, model: str, chain: list[str],
             payload: dict[str, Any], mode: CacheMode = "default") -> CachePlan:
    """The cache's part in this request (see the module docstring)."""
    cache = settings.cache
    cfg = cache.for_feature(tenant, feature)
    base = CachePlan(tenant, feature, metric_feature(settings, tenant, feature))
    reason = _bypass_reason(settings, cfg.exact or cfg.semantic, cfg.any_temperature, payload, mode)
    if reason is not None:
        return CachePlan(base.tenant, base.feature, base.label, bypass=reason)
    form = canonical(payload)
    scope_feature = feature if cache.scope == "feature" else ""
    semantic = None
    text = last_user_text(form)
    if cfg.semantic and text and len(text) <= SEMANTIC_MAX_CHARS:
        scope = digest("semantic", model, chain, without_last_turn(form))
        semantic = SemanticAsk(scope, text, cache.threshold(cfg))
    return CachePlan(base.tenant, base.feature, base.label, digest=digest(scope_feature, model, chain, form),
                     ttl_s=cache.ttl(cfg), read=mode == "default", store=True, semantic=semantic,
                     bypass="no-cache" if mode == "no-cache" else None)


def _bypass_reason(settings: Settings, enabled: bool, any_temperature: bool, payload: dict[str, Any],
                   mode: CacheMode) -> str | None:
    if not settings.cache.enabled or not enabled:
        return "off"
    if mode == "no-store":
        return "no-store"
    if (payload.get("n") or 1) > 1:
        return "n"
    temperature = payload.get("temperature")
    if payload.get("endpoint") == "embeddings":  # not sampled: the same input, the same vectors
        return None
    if not any_temperature and (temperature is None or temperature > 0):
        return "temperature"
    return None
