"""Per-token rates cached for linearly priced models give genai-prices' own answer."""

from __future__ import annotations

import random

import pytest
from genai_prices import Usage as PricedUsage
from genai_prices import calc_price

from execution.providers import Usage
from shared import pricing
from shared.config import DeploymentConfig


def _random_usage(rng: random.Random) -> Usage:
    total = rng.randint(0, 500_000)
    read = rng.randint(0, total)
    written = rng.randint(0, total - read)
    return Usage(total, rng.randint(0, 50_000), read, written, 0, rng.randint(0, written))


@pytest.mark.parametrize(("model", "kind"), [("gpt-4o-mini", "openai"), ("claude-haiku-4-5", "anthropic"),
                                             ("o3-mini", "openai"), ("claude-3-5-haiku", "anthropic")])
def test_cached_rates_match_genai_prices(model: str, kind: str) -> None:
    dep = DeploymentConfig(name=f"{model}@t", provider="p", model=model)
    assert pricing._rates(kind, model) is not None
    rng = random.Random(7)
    for _ in range(50):
        usage = _random_usage(rng)
        extra = {"cache_write_1h_tokens": usage.cache_write_1h_tokens} if usage.cache_write_1h_tokens else {}
        priced = PricedUsage(input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
                             cache_read_tokens=usage.cached_input_tokens,
                             cache_write_tokens=usage.cache_write_tokens, **extra)
        full = float(calc_price(priced, model, provider_id=kind).total_price)
        assert pricing.cost_usd(dep, kind, usage) == pytest.approx(full, rel=1e-9, abs=1e-12)


def test_a_tiered_model_is_always_priced_in_full() -> None:
    assert pricing._lookup("anthropic", "claude-sonnet-4-5") is not None
    assert pricing._rates("anthropic", "claude-sonnet-4-5") is None  # dearer above 200k input tokens
