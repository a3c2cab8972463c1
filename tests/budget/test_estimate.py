"""Pre-flight estimates and their calibration against reported usage."""

from __future__ import annotations

import pytest
import redis

from shared.budget import Calibrator, Estimate, estimate
from shared.config import DeploymentConfig
from shared.keys import Keys
from shared.tokens import count_message_tokens

DEP = DeploymentConfig.model_validate({"name": "d", "provider": "p", "model": "gpt-4o-mini",
                                       "default_max_tokens": 700})
MESSAGES = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Summarise the news."}]
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]


def test_input_is_the_chat_count_of_messages_and_tools() -> None:
    est = estimate({"messages": MESSAGES, "tools": TOOLS, "max_tokens": 10}, DEP, "openai")
    assert est == Estimate(count_message_tokens(MESSAGES, tools=TOOLS), 10)


def test_an_anthropic_style_system_prompt_counts() -> None:
    plain = estimate({"messages": MESSAGES[1:]}, DEP, "anthropic")
    with_system = estimate({"messages": MESSAGES[1:], "system": "You are terse."}, DEP, "anthropic")
    assert with_system.input_tokens > plain.input_tokens


def test_openai_output_is_what_the_request_allows() -> None:
    base = {"messages": MESSAGES}
    assert estimate(base, DEP, "openai").output_tokens == 700
    assert estimate({**base, "max_tokens": 50}, DEP, "openai").output_tokens == 50
    both = {**base, "max_tokens": 50, "max_completion_tokens": 80}
    assert estimate(both, DEP, "openai").output_tokens == 80
    assert estimate({**base, "max_tokens": 50, "n": 3}, DEP, "openai").output_tokens == 150


def test_a_learned_output_is_used_only_where_the_provider_meters_actual_output() -> None:
    req = {"messages": MESSAGES, "max_tokens": 400}
    assert estimate(req, DEP, "anthropic", learned_output=120.2).output_tokens == 121
    assert estimate(req, DEP, "anthropic", learned_output=900).output_tokens == 400
    assert estimate(req, DEP, "anthropic").output_tokens == 400
    assert estimate(req, DEP, "openai", learned_output=120).output_tokens == 400


def test_calibration_scales_the_input_up_to_a_whole_token() -> None:
    raw = estimate({"messages": MESSAGES}, DEP, "openai").input_tokens
    assert estimate({"messages": MESSAGES}, DEP, "openai", calibration=1.1).input_tokens == -(-raw * 11 // 10)


def test_the_input_ratio_follows_reported_usage_and_is_clamped(client: redis.Redis, keys: Keys) -> None:
    calib = Calibrator(client, keys, cache_s=0)
    assert calib.ratio("m") == 1.0
    calib.observe("m", 100, 120)
    assert calib.ratio("m") == pytest.approx(1.2)
    calib.observe("m", 100, 100)
    assert calib.ratio("m") == pytest.approx(1.18)
    calib.observe("wild", 100, 1_000)
    assert calib.ratio("wild") == 2.0
    calib.observe("m", 0, 50)  # nothing to learn from
    assert calib.ratio("m") == pytest.approx(1.18)


def test_reads_are_cached_for_a_few_seconds(client: redis.Redis, keys: Keys) -> None:
    reader, writer = Calibrator(client, keys, cache_s=3600), Calibrator(client, keys)
    assert reader.ratio("m") == 1.0
    writer.observe("m", 100, 150)
    assert reader.ratio("m") == 1.0
    assert Calibrator(client, keys).ratio("m") == pytest.approx(1.5)


def test_output_is_learned_per_tenant_and_feature_after_a_few_samples(
        client: redis.Redis, keys: Keys) -> None:
    calib = Calibrator(client, keys, cache_s=0)
    for tokens in (100, 200):
        calib.observe_output("acme", "chat", "m", tokens)
    assert calib.learned_output("acme", "chat", "m") is None
    calib.observe_output("acme", "chat", "m", 300)
    assert calib.learned_output("acme", "chat", "m") == pytest.approx(100 + 0.1 * 100 + 0.1 * (300 - 110))
    assert calib.learned_output("acme", "other", "m") is None
