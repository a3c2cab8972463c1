"""The meters: token buckets per org and model, as OpenAI and Anthropic document them.

Time is driven by a manual clock, so the tests are exact and fast; no timing asserts.
"""

from __future__ import annotations

import math
from collections import defaultdict

import anthropic
import openai
import pytest

from ops.sim.config import LimitsConfig, SimulatorConfig
from ops.sim.limits import REQUESTS, TOKENS, TOO_LARGE, Charge, Meter, admission_charges
from shared.tokens import count_message_tokens

from .conftest import ManualClock

OPENAI_HEADERS = ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                  "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens")


def test_bucket_refills_continuously_up_to_capacity():
    meter = Meter(LimitsConfig(tpm=600), now=0.0)  # 10 tokens per second
    assert meter.admit([Charge(TOKENS, 600, 600)], 0.0).admitted
    refused = meter.admit([Charge(TOKENS, 50, 50)], 1.0)
    assert not refused.admitted and refused.reason == TOKENS
    assert refused.retry_after == pytest.approx(4.0)
    assert meter.admit([Charge(TOKENS, 50, 50)], 5.0).admitted
    meter.buckets[TOKENS].refresh(10_000.0)
    assert meter.buckets[TOKENS].level == 600


def test_burst_window_shrinks_the_bucket():
    meter = Meter(LimitsConfig(rpm=600, burst_window_s=1), now=0.0)  # at most 10 at once
    assert sum(meter.admit([Charge(REQUESTS, 1, 1)], 0.0).admitted for _ in range(30)) == 10


def test_admission_is_all_or_nothing_and_names_the_binding_axis():
    meter = Meter(LimitsConfig(rpm=60, tpm=1000), now=0.0)
    charges = admission_charges(meter.limits, prompt=100, uncached_input=100, max_output=900)
    assert meter.admit(charges, 0.0).admitted
    refused = meter.admit(charges, 0.0)
    assert refused.reason == TOKENS and meter.buckets[REQUESTS].level == 59
    too_big = meter.admit(admission_charges(meter.limits, prompt=900, uncached_input=900, max_output=900), 60.0)
    assert too_big.reason == TOO_LARGE and not too_big.admitted


def test_openai_charge_rules():
    def tokens(rule: str) -> float:
        charges = admission_charges(LimitsConfig(tpm=10_000, openai_charge=rule), prompt=300, uncached_input=300,
                                    max_output=200)
        return next(c.take for c in charges if c.axis == TOKENS)

    assert tokens("sum") == 500 and tokens("max") == 300


def _offered_load(sim, clock: ManualClock, seconds: float, every: float, max_tokens: int) -> dict[int, int]:
    """Send one request every ``every`` simulated seconds; return admitted charge per minute window."""
    messages = [{"role": "user", "content": "Count me against the tokens per minute limit please."}]
    charge = count_message_tokens(messages) + max_tokens
    admitted: dict[int, int] = defaultdict(int)
    with sim.client() as client:
        for i in range(int(seconds / every)):
            r = client.post("/v1/chat/completions",
                            json={"model": "gpt-test", "messages": messages, "max_tokens": max_tokens})
            assert all(h in r.headers for h in OPENAI_HEADERS), r.headers
            if r.status_code == 200:
                admitted[int(i * every // 60)] += charge
            else:
                assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
                assert r.json()["error"]["code"] == "rate_limit_exceeded"
            clock.advance(every)
    return admitted


def test_accepted_tokens_per_minute_match_tpm_at_fixed_overload(make_sim):
    clock = ManualClock()
    tpm = 6000
    sim = make_sim(SimulatorConfig.model_validate({
        "models": {"gpt-test": {"limits": {"rpm": 100_000, "tpm": tpm, "burst_window_s": 10}}},
    }), clock=clock)
    per_minute = _offered_load(sim, clock, seconds=300, every=0.25, max_tokens=50)  # ~2.6x the limit
    steady = [per_minute[m] for m in range(1, 5)]  # minute 0 also spends the initial full bucket
    assert all(abs(tokens - tpm) / tpm < 0.03 for tokens in steady), steady
    stats = sim.sim.stats.snapshot(include_series=False)["totals"]
    assert stats["rate_limited"]["tokens"] == stats["requests"] - stats["admitted"] > 0


def test_retry_after_ms_is_exactly_enough(make_sim):
    clock = ManualClock()
    sim = make_sim(SimulatorConfig.model_validate({"models": {"gpt-test": {"limits": {"tpm": 600}}}}), clock)
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 200}
    while True:
        try:
            client.chat.completions.create(**body)
        except openai.RateLimitError as err:
            wait_ms = int(err.response.headers["retry-after-ms"])
            assert err.response.headers["x-ratelimit-remaining-tokens"] == str(
                int(sim.sim.limiter.meters[("k", "gpt-test")].buckets[TOKENS].level))
            assert "tokens per min (TPM)" in err.message
            break
    clock.advance(wait_ms / 1000)
    assert client.chat.completions.create(**body).usage.prompt_tokens > 0


def test_remaining_and_reset_headers_track_the_bucket(make_sim):
    clock = ManualClock()
    sim = make_sim(SimulatorConfig.model_validate(
        {"models": {"gpt-test": {"limits": {"rpm": 60, "tpm": 6000}}}}), clock)
    messages = [{"role": "user", "content": "hi"}]
    with sim.client() as client:
        r = client.post("/v1/chat/completions", json={"model": "gpt-test", "messages": messages, "max_tokens": 100})
    charge = count_message_tokens(messages) + 100
    assert r.headers["x-ratelimit-remaining-tokens"] == str(6000 - charge)
    assert r.headers["x-ratelimit-remaining-requests"] == "59"
    assert r.headers["x-ratelimit-reset-requests"] == "1s"
    assert r.headers["x-ratelimit-reset-tokens"] == f"{charge / 100:g}s"


def test_too_large_request_is_not_retryable(make_sim):
    sim = make_sim(SimulatorConfig.model_validate({"models": {"gpt-test": {"limits": {"tpm": 1000}}}}))
    client = openai.OpenAI(base_url=sim.url + "/v1", api_key="k", max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-test", messages=[{"role": "user", "content": "x"}],
                                       max_tokens=2000)
    assert "Request too large" in err.value.message
    assert err.value.response.headers["x-should-retry"] == "false"


def test_keys_of_one_org_share_limits(make_sim):
    sim = make_sim(SimulatorConfig.model_validate({
        "keys": [{"key": "a1", "org": "acme"}, {"key": "a2", "org": "acme"}],
        "models": {"gpt-test": {"limits": {"rpm": 2, "burst_window_s": 60}}},
    }), ManualClock())
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    codes = []
    for key in ("a1", "a2", "a1", "other"):
        with sim.client(key) as client:
            codes.append(client.post("/v1/chat/completions", json=body).status_code)
    assert codes == [200, 200, 429, 200]


def _anthropic_sim(make_sim, rule: str):
    clock = ManualClock()
    sim = make_sim(SimulatorConfig.model_validate({"models": {"claude-test": {
        "limits": {"rpm": 1000, "itpm": 10_000, "otpm": 1000, "output_rule": rule},
        "output": {"dist": "fixed", "tokens": 40},
    }}}), clock)
    return sim, anthropic.Anthropic(base_url=sim.url, api_key="k", max_retries=0)


def test_anthropic_output_counted_as_produced(make_sim):
    sim, client = _anthropic_sim(make_sim, "produced")
    messages = [{"role": "user", "content": "hello there"}]
    first = client.messages.with_raw_response.create(model="claude-test", messages=messages, max_tokens=500)
    assert first.headers["anthropic-ratelimit-output-tokens-remaining"] == "1000"  # nothing taken at arrival
    assert first.headers["anthropic-ratelimit-input-tokens-remaining"] == str(
        10_000 - count_message_tokens(messages))
    second = client.messages.with_raw_response.create(model="claude-test", messages=messages, max_tokens=500)
    assert second.headers["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - 40)


def test_anthropic_older_rule_reserves_max_tokens_then_refunds(make_sim):
    sim, client = _anthropic_sim(make_sim, "estimate")
    messages = [{"role": "user", "content": "hello there"}]
    first = client.messages.with_raw_response.create(model="claude-test", messages=messages, max_tokens=500)
    assert first.headers["anthropic-ratelimit-output-tokens-remaining"] == "500"
    second = client.messages.with_raw_response.create(model="claude-test", messages=messages, max_tokens=500)
    assert second.headers["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - 40 - 500)
    with pytest.raises(anthropic.RateLimitError) as err:
        client.messages.create(model="claude-test", messages=messages, max_tokens=950)
    headers = err.value.response.headers
    assert err.value.body["error"]["type"] == "rate_limit_error"
    assert headers["anthropic-ratelimit-output-tokens-remaining"] == str(1000 - 80)
    assert int(headers["retry-after"]) == math.ceil((950 - (1000 - 80)) / (1000 / 60))
    assert headers["anthropic-ratelimit-tokens-remaining"] == headers["anthropic-ratelimit-output-tokens-remaining"]
