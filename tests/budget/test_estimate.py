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


def test_a_deployment_that_counts_by_tokenizer_is_learned_with_its_ratio(client: redis.Redis, keys: Keys) -> None:
    calib = Calibrator(client, keys, cache_s=0)
    assert calib.prompt_input("d", 100, 150) == 100  # nothing learned yet: the tokenizer's count
    for tok, chars in ((100, 150), (40, 90), (300, 310)):  # it reports 1.2 x the tokenizer, whatever the text
        calib.observe("d", tok, chars, round(tok * 1.2))
    assert calib.prompt_input("d", 1000, 5000) == 1200


def test_a_deployment_that_counts_by_characters_is_learned_whatever_the_text(client: redis.Redis,
                                                                             keys: Keys) -> None:
    """Random letters, English, code: the tokenizer's ratio to the provider's count swings with the text,
    the characters rule does not; the estimate follows the rule that predicts, and the text it meets."""
    calib = Calibrator(client, keys, cache_s=0)
    for tok, chars in ((12_142, 6_000), (1_000, 1_100), (500, 260), (2_000, 2_300), (7_000, 3_500)):
        calib.observe("c", tok, chars, chars)
    assert calib.prompt_input("c", 20_000, 9_000) == 9_000
    assert calib.prompt_input("c", 20_000, 0) == 20_000  # no characters count (an older envelope)


def test_a_learned_ratio_is_kept_within_bounds_and_a_missing_count_teaches_nothing(client: redis.Redis,
                                                                                   keys: Keys) -> None:
    calib = Calibrator(client, keys, cache_s=0)
    for _ in range(3):
        calib.observe("wild", 100, 100, 1_000)
    assert calib.prompt_input("wild", 100, 100) == 500  # clamped at 5x
    calib.observe("fresh", 0, 100, 50)
    calib.observe("fresh", 100, 100, 0)
    assert calib.prompt_input("fresh", 100, 100) == 100


def test_reads_are_cached_for_a_few_seconds(client: redis.Redis, keys: Keys) -> None:
    reader, writer = Calibrator(client, keys, cache_s=3600), Calibrator(client, keys)
    assert reader.prompt_input("m", 100, 100) == 100
    for _ in range(3):
        writer.observe("m", 100, 100, 150)
    assert reader.prompt_input("m", 100, 100) == 100
    assert Calibrator(client, keys).prompt_input("m", 100, 100) == 150


def test_output_is_learned_per_tenant_and_feature_after_a_few_samples(
        client: redis.Redis, keys: Keys) -> None:
    calib = Calibrator(client, keys, cache_s=0)
    for tokens in (100, 200):
        calib.observe_output("acme", "chat", "m", tokens)
    assert calib.learned_output("acme", "chat", "m") is None
    calib.observe_output("acme", "chat", "m", 300)
    assert calib.learned_output("acme", "chat", "m") == pytest.approx(100 + 0.1 * 100 + 0.1 * (300 - 110))
    assert calib.learned_output("acme", "other", "m") is None
