"""What an attempt cost in USD: a deployment's configured price when it has one, else genai-prices.

Cost is the provider's reported usage priced per kind of token, at the price in force when the call was
made: uncached input, cached input (cache reads), cache writes (Anthropic's, an hour's dearer than five
minutes'), and output (reasoning tokens are output, at the output price). A per-deployment ``price``
in the config wins over the table.

genai-prices answers from the price table bundled in the installed package. Its only network path is the
opt-in ``genai_prices.UpdatePrices`` background updater, which the gateway never starts, so prices
change only when the package is upgraded (a reviewed dependency bump, not a surprise at run time).
Lookups are cached per (provider, model) because this runs once per attempt on the hot path, and so
are per-token rates (``_rates``) for a model whose price is one unconditional, linear table: a few
multiplications instead of genai-prices' unit resolution (~60 µs). Models with tiers or prices that
depend on the date or time of day always go through genai-prices, with the time of the call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
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
    """Token counts of one attempt, as ``execution.providers.Usage`` holds them: ``input_tokens`` includes
    the cache reads and writes, ``output_tokens`` the reasoning tokens."""

    @property
    def input_tokens(self) -> int: ...

    @property
    def output_tokens(self) -> int: ...

    @property
    def cached_input_tokens(self) -> int: ...

    @property
    def cache_write_tokens(self) -> int: ...

    @property
    def cache_write_1h_tokens(self) -> int: ...


@dataclass(frozen=True)
class Tokens:
    """A usage to price that no provider reported: a worst case, or what an attempt would have cost
    without its cache."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0


@dataclass(frozen=True)
class _Split:
    """Input tokens by price: uncached, cache reads, writes for 5 minutes and for an hour."""

    uncached: int
    read: int
    write_5m: int
    write_1h: int


def _split(usage: TokenUsage) -> _Split:
    """Each kind counted once, never more than the input reported (a malformed usage cannot price above it)."""
    total = max(0, usage.input_tokens)
    read = min(max(0, usage.cached_input_tokens), total)
    written = min(max(0, usage.cache_write_tokens), total - read)
    write_1h = min(max(0, usage.cache_write_1h_tokens), written)
    return _Split(total - read - written, read, written - write_1h, write_1h)


def cost_usd(deployment: DeploymentConfig, provider_kind: str, usage: TokenUsage,
             at: datetime | None = None) -> float:
    """USD for ``usage`` on ``deployment`` at ``at`` (now); 0.0 (and one warning) for a model nobody priced."""
    split = _split(usage)
    output = max(0, usage.output_tokens)
    if deployment.price is not None:
        return _priced_by_config(deployment.price, split, output)
    provider_id, model = _PRICE_PROVIDER.get(provider_kind, provider_kind), deployment.model.lower()
    found = _lookup(provider_id, model)
    if found is None:
        return 0.0
    rates = _rates(provider_id, model)
    if rates is not None:
        return (rates.request + split.uncached * rates.input + split.read * rates.cache_read
                + split.write_5m * rates.cache_write + split.write_1h * rates.cache_write_1h + output * rates.output)
    return _calc(*found, split, output, at or datetime.now(UTC))


def cost_without_cache(deployment: DeploymentConfig, provider_kind: str, usage: TokenUsage,
                       at: datetime | None = None) -> float:
    """What ``usage`` would have cost had every input token been uncached: the baseline of the cache's saving."""
    plain = Tokens(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens)
    return cost_usd(deployment, provider_kind, plain, at)


def worst_case_usd(deployment: DeploymentConfig, provider_kind: str, input_tokens: int, output_tokens: int) -> float:
    """The most a call can cost: its prompt estimate at the input price and its output cap at the output price."""
    return cost_usd(deployment, provider_kind, Tokens(input_tokens=input_tokens, output_tokens=output_tokens))


def _calc(provider: types.Provider, model: types.ModelInfo, split: _Split, output: int, at: datetime) -> float:
    written = split.write_5m + split.write_1h
    priced = PricedUsage(input_tokens=split.uncached + split.read + written, output_tokens=output,
                         cache_read_tokens=split.read, cache_write_tokens=written,
                         **({"cache_write_1h_tokens": split.write_1h} if split.write_1h else {}))
    return float(model.calc_price(priced, provider, genai_request_timestamp=at).total_price)


@dataclass(frozen=True)
class _Rates:
    """USD per request and per token of each kind, for a model priced linearly."""

    request: float
    input: float
    cache_read: float
    cache_write: float
    cache_write_1h: float
    output: float


_PROBE = 1_000  # tokens per probe; rates are checked again at 10M tokens, above any context window
_CHECKS = (_Split(10_000_000, 0, 0, 0), _Split(0, 10_000_000, 0, 0), _Split(0, 0, 10_000_000, 0),
           _Split(0, 0, 0, 10_000_000), _Split(123_457, 1_011, 503, 77))


@lru_cache(maxsize=1024)
def _rates(provider_id: str, model_id: str) -> _Rates | None:
    """Per-token rates when the model's price is linear in each kind of token: probed through
    genai-prices, then checked at other sizes. None otherwise (tiered, or by date or time of day)."""
    found = _lookup(provider_id, model_id)
    if found is None or not isinstance(found[1].prices, ModelPrice):  # conditional: by date or time of day
        return None
    provider, model = found
    at = datetime.now(UTC)

    def price(split: _Split, output: int = 0) -> float:
        return _calc(provider, model, split, output, at)

    nothing = _Split(0, 0, 0, 0)
    base = price(nothing)

    def per_token(split: _Split, output: int = 0) -> float:
        return (price(split, output) - base) / _PROBE

    rates = _Rates(request=base, input=per_token(_Split(_PROBE, 0, 0, 0)),
                   cache_read=per_token(_Split(0, _PROBE, 0, 0)), cache_write=per_token(_Split(0, 0, _PROBE, 0)),
                   cache_write_1h=per_token(_Split(0, 0, 0, _PROBE)), output=per_token(nothing, _PROBE))
    for split, output in [(c, 0) for c in _CHECKS] + [(nothing, 10_000_000), (_CHECKS[-1], 6_789)]:
        linear = (base + split.uncached * rates.input + split.read * rates.cache_read
                  + split.write_5m * rates.cache_write + split.write_1h * rates.cache_write_1h + output * rates.output)
        if abs(price(split, output) - linear) > 1e-9 * max(1.0, linear):
            return None  # tiered (or otherwise not linear): price every attempt in full
    return rates


def _priced_by_config(price: Price, split: _Split, output: int) -> float:
    read_rate = price.input_per_mtok if price.cached_input_per_mtok is None else price.cached_input_per_mtok
    write_rate = price.input_per_mtok if price.cache_write_per_mtok is None else price.cache_write_per_mtok
    micro_usd = (split.uncached * price.input_per_mtok + split.read * read_rate
                 + (split.write_5m + split.write_1h) * write_rate + output * price.output_per_mtok)
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
        return rates.input, rates.output
    found = _lookup(provider_id, model)
    if found is None:
        return 0.0, 0.0
    at, nothing = datetime.now(UTC), _Split(0, 0, 0, 0)
    base = _calc(*found, nothing, 0, at)
    return ((_calc(*found, _Split(_PROBE, 0, 0, 0), 0, at) - base) / _PROBE,
            (_calc(*found, nothing, _PROBE, at) - base) / _PROBE)
