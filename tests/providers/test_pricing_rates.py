"""Per-token rates cached for linearly priced models give genai-prices' own answer."""

from __future__ import annotations

import random

import pytest

from execution.providers import Usage
from shared import pricing
from shared.config import DeploymentConfig


@pytest.mark.parametrize(("model", "kind"), [("gpt-4o-mini", "openai"), ("claude-haiku-4-5", "anthropic")])
def test_cached_rates_match_genai_prices(model: str, kind: str) -> None:
    dep = DeploymentConfig(name=f"{model}@t", provider="p", model=model)
    provider, info = pricing._lookup(kind, model)  # type: ignore[misc]
    assert pricing._rates(kind, model) is not None
    rng = random.Random(7)
    for _ in range(50):
        usage = Usage(rng.randint(0, 500_000), rng.randint(0, 50_000), rng.randint(0, 600_000))
        cached = min(usage.cached_input_tokens, usage.input_tokens)
        full = pricing._calc(provider, info, usage.input_tokens, usage.output_tokens, cached)
        assert pricing.cost_usd(dep, kind, usage) == pytest.approx(full, rel=1e-9, abs=1e-12)


def test_a_tiered_model_is_always_priced_in_full() -> None:
    assert pricing._lookup("anthropic", "claude-sonnet-4-5") is not None
    assert pricing._rates("anthropic", "claude-sonnet-4-5") is None  # dearer above 200k input tokens
