"""What an attempt cost in USD: a deployment's configured price when it has one, else genai-prices.

genai-prices answers from the price table bundled in the installed package. Its only network path is the
opt-in ``genai_prices.UpdatePrices`` background updater, which the gateway never starts, so prices
change only when the package is upgraded (a reviewed dependency bump, not a surprise at run time).
Lookups are cached per (provider, model) because this runs once per attempt on the hot path, and so
are per-token rates (``_rates``) for a model whose price is one unconditional, linear table: a few
multiplications instead of genai-prices' unit resolution (~60 µs). Models with tiers or prices that
depend on the date or time of day always go through genai-prices.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Protocol

from genai_prices import Usage as PricedUsage
from genai_prices import data_snapshot, types
from genai_prices.types import ModelPrice

from shared.config import DeploymentConfig, Price

log = logging.getLogger(__name__)

# ProviderConfig.kind -> the provider id in genai-prices.
_PRICE_PROVIDER = {"openai": "openai", "anthropic": "anthropic"}


class TokenUsage(Protocol):
    """Token counts of one attempt; ``input_tokens`` includes the cached ones."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cached_input_tokens(self) -> int: ...


def cost_usd(deployment: DeploymentConfig, provider_kind: str, usage: TokenUsage) -> float:
    """USD for ``usage`` on ``deployment``; 0.0 (and one warning) for a model nobody has priced."""
    if deployment.price is not None:
        return _priced_by_config(deployment.price, usage)
    provider_id, model = _PRICE_PROVIDER.get(provider_kind, provider_kind), deployment.model.lower()
    found = _lookup(provider_id, model)
    if found is None:
        return 0.0
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    rates = _rates(provider_id, model)
    if rates is not None:
        per_request, per_input, per_output, per_cached = rates
        return per_request + (usage.input_tokens - cached) * per_input + usage.output_tokens * per_output \
            + cached * per_cached
    return _calc(*found, usage.input_tokens, usage.output_tokens, cached)


def _calc(provider: types.Provider, model: types.ModelInfo, input_tokens: int, output_tokens: int,
          cached: int) -> float:
    priced = PricedUsage(input_tokens=input_tokens, output_tokens=output_tokens, cache_read_tokens=cached)
    return float(model.calc_price(priced, provider).total_price)


_PROBE = 1_000  # tokens per probe; rates are checked again at 10M tokens, above any context window
_CHECKS = ((10_000_000, 0, 0), (0, 10_000_000, 0), (10_000_000, 0, 10_000_000), (123_457, 6_789, 1_011))


@lru_cache(maxsize=1024)
def _rates(provider_id: str, model_id: str) -> tuple[float, float, float, float] | None:
    """(per request, per uncached input, per output, per cached input token) when the model's price is
    linear in each: probed through genai-prices, then checked at other sizes. None otherwise."""
    found = _lookup(provider_id, model_id)
    if found is None or not isinstance(found[1].prices, ModelPrice):  # conditional: by date or time of day
        return None
    provider, model = found
    base = _calc(provider, model, 0, 0, 0)
    per_input = (_calc(provider, model, _PROBE, 0, 0) - base) / _PROBE
    per_output = (_calc(provider, model, 0, _PROBE, 0) - base) / _PROBE
    per_cached = (_calc(provider, model, _PROBE, 0, _PROBE) - base) / _PROBE
    for inp, out, cached in _CHECKS:
        linear = base + (inp - cached) * per_input + out * per_output + cached * per_cached
        if abs(_calc(provider, model, inp, out, cached) - linear) > 1e-9 * max(1.0, linear):
            return None  # tiered (or otherwise not linear): price every attempt in full
    return base, per_input, per_output, per_cached


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



def unit_prices(deployment: DeploymentConfig, provider_kind: str) -> tuple[float, float]:
    """USD per input token and per output token, as routes compare deployments by (no per-request fee,
    no cache discount). A model priced by tiers or time of day is read at a 1,000-token request."""
    if deployment.price is not None:
        return deployment.price.input_per_mtok / 1_000_000, deployment.price.output_per_mtok / 1_000_000
    provider_id, model = _PRICE_PROVIDER.get(provider_kind, provider_kind), deployment.model.lower()
    rates = _rates(provider_id, model)
    if rates is not None:
        return rates[1], rates[2]
    found = _lookup(provider_id, model)
    if found is None:
        return 0.0, 0.0
    base = _calc(*found, 0, 0, 0)
    return (_calc(*found, _PROBE, 0, 0) - base) / _PROBE, (_calc(*found, 0, _PROBE, 0) - base) / _PROBE
