"""Cost per attempt: genai-prices from bundled data, config overrides, unknown models at zero."""

from __future__ import annotations

import logging

import genai_prices.update_prices as update_prices
import pytest

from execution.providers import Usage
from shared.config import DeploymentConfig, Price
from shared.pricing import cost_usd, price_known


def deployment(model: str, price: Price | None = None) -> DeploymentConfig:
    return DeploymentConfig(name=f"{model}@t", provider="p", model=model, price=price)


def test_gpt_4o_mini_list_price():
    # $0.15 / MTok input, $0.075 cached input, $0.60 output.
    cost = cost_usd(deployment("gpt-4o-mini"), "openai", Usage(1_000_000, 1_000_000, 400_000))
    assert cost == pytest.approx(0.6 * 0.15 + 0.4 * 0.075 + 0.60)


def test_claude_haiku_4_5_list_price():
    # $1 / MTok input, $5 / MTok output.
    assert cost_usd(deployment("claude-haiku-4-5"), "anthropic", Usage(2_000, 1_000)) == pytest.approx(0.002 + 0.005)


def test_config_price_overrides_the_table():
    price = Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)
    usage = Usage(input_tokens=1_000_000, output_tokens=500_000, cached_input_tokens=200_000)
    assert cost_usd(deployment("gpt-4o-mini", price), "openai", usage) == pytest.approx(0.8 * 2 + 0.2 * 0.5 + 4.0)
    no_cache_rate = Price(input_per_mtok=2.0, output_per_mtok=8.0)
    assert cost_usd(deployment("my-llama", no_cache_rate), "openai", usage) == pytest.approx(2.0 + 4.0)


def test_unknown_model_costs_zero_and_warns_once(caplog):
    unknown = deployment("totally-unknown-model-xyz")
    with caplog.at_level(logging.WARNING, logger="shared.pricing"):
        assert cost_usd(unknown, "openai", Usage(100, 100)) == 0.0
        assert cost_usd(unknown, "openai", Usage(100, 100)) == 0.0
    warnings = [r for r in caplog.records if "totally-unknown-model-xyz" in r.getMessage()]
    assert len(warnings) == 1
    assert "deployments[].price" in warnings[0].getMessage()
    assert not price_known("openai", "totally-unknown-model-xyz")
    assert price_known("anthropic", "claude-haiku-4-5")


def test_pricing_never_starts_the_network_price_updater():
    cost_usd(deployment("gpt-4o-mini"), "openai", Usage(10, 10))
    assert update_prices._shared_updater.ref_count == 0
