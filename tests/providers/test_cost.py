"""Exact cost: what a provider's answer says it used, priced per kind of token, equals genai-prices' own
figure for the same answer (its own usage extraction and its own price table).

The simulator does not report cache reads, cache writes or reasoning tokens, so these answers come from
a mocked HTTP edge: the adapter reads the usage, ``shared.pricing`` prices it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from genai_prices import Usage as PricedUsage
from genai_prices import calc_price, extract_usage

from execution.providers import Usage
from shared import pricing
from shared.config import Price


def _openai_answer(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model, "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]}


def _anthropic_answer(model: str, usage: dict[str, Any]) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "stop_reason": "end_turn",
            "stop_sequence": None, "content": [{"type": "text", "text": "ok"}], "usage": usage}


OPENAI_CASES = [
    ("gpt-4o-mini", {"prompt_tokens": 12_000, "completion_tokens": 900,
                     "prompt_tokens_details": {"cached_tokens": 8_192}}),
    ("gpt-4o", {"prompt_tokens": 3_000, "completion_tokens": 1_000, "prompt_tokens_details": {"cached_tokens": 0}}),
    ("o3-mini", {"prompt_tokens": 5_000, "completion_tokens": 4_000, "prompt_tokens_details": {"cached_tokens": 1_024},
                 "completion_tokens_details": {"reasoning_tokens": 3_500}}),
    ("gpt-4.1", {"prompt_tokens": 40_000, "completion_tokens": 2_000,
                 "prompt_tokens_details": {"cached_tokens": 30_000}}),
]
ANTHROPIC_CASES = [
    ("claude-haiku-4-5", {"input_tokens": 200, "output_tokens": 300, "cache_read_input_tokens": 12_000,
                          "cache_creation_input_tokens": 0}),
    ("claude-haiku-4-5", {"input_tokens": 50, "output_tokens": 120, "cache_read_input_tokens": 0,
                          "cache_creation_input_tokens": 9_000,
                          "cache_creation": {"ephemeral_5m_input_tokens": 6_000, "ephemeral_1h_input_tokens": 3_000}}),
    ("claude-sonnet-4-5", {"input_tokens": 1_000, "output_tokens": 2_000, "cache_read_input_tokens": 20_000,
                           "cache_creation_input_tokens": 4_000}),
    ("claude-sonnet-4-5", {"input_tokens": 150_000, "output_tokens": 2_000, "cache_read_input_tokens": 60_000,
                           "cache_creation_input_tokens": 0}),  # over 200k input: the dearer tier
    ("claude-opus-4-1", {"input_tokens": 3_000, "output_tokens": 800, "cache_read_input_tokens": 1_000,
                         "cache_creation_input_tokens": 2_000}),
]


def _answering(body: dict[str, Any]) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=json.dumps(body).encode())

    return handler


def _genai_prices_figure(body: dict[str, Any], provider: str) -> float:
    flavor = "chat" if provider == "openai" else "default"
    return float(extract_usage(body, provider_id=provider, api_flavor=flavor).calc_price().total_price)


@pytest.mark.parametrize(("model", "usage"), OPENAI_CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(OPENAI_CASES)])
def test_openai_cost_is_genai_prices_figure(mock_adapter: Any, model: str, usage: dict[str, Any]) -> None:
    body = _openai_answer(model, usage)
    adapter = mock_adapter("openai", _answering(body), model=model)
    result = adapter.call({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert result.usage.reasoning_tokens == (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
    cost = pricing.cost_usd(adapter.deployment, "openai", result.usage)
    assert cost == pytest.approx(_genai_prices_figure(body, "openai"), rel=1e-9)
    assert cost > 0


@pytest.mark.parametrize(("model", "usage"), ANTHROPIC_CASES,
                         ids=[f"{m}-{i}" for i, (m, _) in enumerate(ANTHROPIC_CASES)])
def test_anthropic_cost_is_genai_prices_figure(mock_adapter: Any, model: str, usage: dict[str, Any]) -> None:
    body = _anthropic_answer(model, usage)
    adapter = mock_adapter("anthropic", _answering(body), model=model)
    result = adapter.call({"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
    assert result.usage.cache_write_tokens == usage["cache_creation_input_tokens"]
    assert result.usage.input_tokens == (usage["input_tokens"] + usage["cache_read_input_tokens"]
                                         + usage["cache_creation_input_tokens"])
    cost = pricing.cost_usd(adapter.deployment, "anthropic", result.usage)
    assert cost == pytest.approx(_genai_prices_figure(body, "anthropic"), rel=1e-9)


def test_cache_reads_and_writes_are_priced_apart_from_input() -> None:
    """Claude Haiku 4.5: $1/MTok input, $0.10 cache reads, $1.25 five-minute writes, $2 one-hour writes, $5 output."""
    dep = pricing_deployment("claude-haiku-4-5")
    usage = Usage(input_tokens=1_000_000 + 2_000_000 + 300_000, output_tokens=100_000, cached_input_tokens=2_000_000,
                  cache_write_tokens=300_000, cache_write_1h_tokens=100_000)
    expected = 1.0 + 2 * 0.10 + 0.2 * 1.25 + 0.1 * 2.0 + 0.1 * 5.0
    assert pricing.cost_usd(dep, "anthropic", usage) == pytest.approx(expected)
    assert pricing.cost_without_cache(dep, "anthropic", usage) == pytest.approx(3.3 * 1.0 + 0.5)


def test_a_deployment_price_override_wins_for_every_kind_of_token() -> None:
    price = Price(input_per_mtok=3, output_per_mtok=15, cached_input_per_mtok=0.3, cache_write_per_mtok=3.75)
    dep = pricing_deployment("claude-haiku-4-5", price)
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_input_tokens=500_000,
                  cache_write_tokens=200_000, reasoning_tokens=400_000)
    assert pricing.cost_usd(dep, "anthropic", usage) == pytest.approx(0.3 * 3 + 0.5 * 0.3 + 0.2 * 3.75 + 15)


def test_the_price_in_force_at_the_call_is_used() -> None:
    """Claude Sonnet 4.6's table changed on 2026-03-13: a call is priced at the table of its own date."""
    dep = pricing_deployment("claude-sonnet-4-6")
    usage = Usage(input_tokens=300_000, output_tokens=20_000, cached_input_tokens=100_000)
    before, after = datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 6, 5, tzinfo=UTC)
    priced = PricedUsage(input_tokens=300_000, output_tokens=20_000, cache_read_tokens=100_000)
    for moment in (before, after):
        figure = calc_price(priced, "claude-sonnet-4-6", provider_id="anthropic", genai_request_timestamp=moment)
        assert pricing.cost_usd(dep, "anthropic", usage, at=moment) == pytest.approx(float(figure.total_price))
    assert pricing.cost_usd(dep, "anthropic", usage, at=before) != pricing.cost_usd(dep, "anthropic", usage, at=after)


def test_worst_case_is_prompt_at_input_price_plus_output_cap_at_output_price() -> None:
    dep = pricing_deployment("gpt-4o-mini")  # $0.15 / $0.60 per MTok
    assert pricing.worst_case_usd(dep, "openai", 10_000, 1_000) == pytest.approx(10_000 * 0.15e-6 + 1_000 * 0.6e-6)


def pricing_deployment(model: str, price: Price | None = None) -> Any:
    from shared.config import DeploymentConfig

    return DeploymentConfig(name=f"{model}@t", provider="p", model=model, price=price)
