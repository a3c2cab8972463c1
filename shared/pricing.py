"""What an attempt cost in USD: a deployment's configured price when it has one, else genai-prices.

genai-prices answers from the price table bundled in the installed package. Its only network path is the
opt-in ``genai_prices.UpdatePrices`` background updater, which the gateway never starts, so prices
change only when the package is upgraded (a reviewed dependency bump, not a surprise at run time).
Lookups are cached per (provider, model) because this runs once per attempt on the hot path.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

from genai_prices import Usage as PricedUsage
from genai_prices import data_snapshot, types

from shared.config import DeploymentConfig, Price

log = logging.getLogger(__name__)

# ProviderConfig.kind -> the provider id in genai-prices.
_PRICE_PROVIDER = {"openai": "openai", "anthropic": "anthropic"}


class TokenUsage(Protocol):
    """Token counts of one attempt; ``input_tokens`` includes the cached ones."""

    input_tokens: int
    output_tokens: int
    cached_input_tokens: int


def cost_usd(deployment: DeploymentConfig, provider_kind: str, usage: TokenUsage) -> float:
    """USD for ``usage`` on ``deployment``; 0.0 (and one warning) for a model nobody has priced."""
    if deployment.price is not None:
        return _priced_by_config(deployment.price, usage)
    found = _lookup(_PRICE_PROVIDER.get(provider_kind, provider_kind), deployment.model.lower())
    if found is None:
        return 0.0
    provider, model = found
    priced = PricedUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=min(usage.cached_input_tokens, usage.input_tokens),
    )
    return float(model.calc_price(priced, provider).total_price)


def _priced_by_config(price: Price, usage: TokenUsage) -> float:
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    cached_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    micro_usd = (
        (usage.input_tokens - cached) * price.input_per_mtok
        + cached * cached_rate
        + usage.output_tokens * price.output_per_mtok
    )
    return micro_usd / 1_000_000


@lru_cache(maxsize=1024)
def _lookup(provider_id: str, model: str) -> tuple[types.Provider, types.ModelInfo] | None:
    """The bundled price entry for a model; a miss is cached too, so its warning is logged once."""
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except LookupError as exc:
        log.warning(
            "no price known for model %r at provider %r (%s): its cost is recorded as 0.0; "
            "set deployments[].price in the config to price it",
            model, provider_id, exc,
        )
        return None


def price_known(provider_kind: str, model: str) -> bool:
    """Whether genai-prices can price ``model`` (for config checks at start-up)."""
    return _lookup(_PRICE_PROVIDER.get(provider_kind, provider_kind), model.lower()) is not None

