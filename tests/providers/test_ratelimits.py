"""Reading the providers' rate-limit headers into one budget-sync shape."""

from __future__ import annotations

import pytest

from execution.providers import rate_limit_state
from execution.providers.ratelimits import parse_duration

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("6m0s", 360.0),
        ("1.5s", 1.5),
        ("20ms", 0.02),
        ("1h2m3s", 3723.0),
        ("0s", 0.0),
        ("17", 17.0),
        ("", None),
        ("soon", None),
        ("1x", None),
    ],
)
def test_go_durations(text, seconds):
    assert parse_duration(text) == (pytest.approx(seconds) if seconds is not None else None)


def test_openai_headers():
    state = rate_limit_state(
        {
            "x-ratelimit-limit-requests": "5000",
            "x-ratelimit-remaining-requests": "4999",
            "x-ratelimit-reset-requests": "12ms",
            "x-ratelimit-limit-tokens": "2000000",
            "x-ratelimit-remaining-tokens": "1999000",
            "x-ratelimit-reset-tokens": "6m0s",
        },
        now=NOW,
    )
    assert state == {
        "requests_limit": 5000,
        "requests_remaining": 4999,
        "requests_reset_s": pytest.approx(0.012),
        "tokens_limit": 2_000_000,
        "tokens_remaining": 1_999_000,
        "tokens_reset_s": 360.0,
    }


def test_anthropic_headers():
    state = rate_limit_state(
        {
            "anthropic-ratelimit-requests-limit": "4000",
            "anthropic-ratelimit-requests-remaining": "3999",
            "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
            "anthropic-ratelimit-tokens-remaining": "470000",
            "anthropic-ratelimit-tokens-reset": "2023-11-14T22:13:50Z",
            "anthropic-ratelimit-input-tokens-limit": "400000",
            "anthropic-ratelimit-input-tokens-remaining": "399000",
            "anthropic-ratelimit-input-tokens-reset": "2023-11-14T22:14:20+00:00",
            "anthropic-ratelimit-output-tokens-remaining": "79000",
            "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:00Z",
        },
        now=NOW,
    )
    assert state["requests_limit"] == 4000 and state["requests_remaining"] == 3999
    assert state["requests_reset_s"] == pytest.approx(1.0)
    assert state["tokens_remaining"] == 470_000 and state["tokens_reset_s"] == pytest.approx(30.0)
    assert state["input_tokens_remaining"] == 399_000 and state["input_tokens_reset_s"] == pytest.approx(60.0)
    assert state["output_tokens_remaining"] == 79_000
    assert state["output_tokens_reset_s"] == 0.0  # already past: never negative


def test_absent_or_unreadable_headers_are_left_out():
    assert rate_limit_state({}) == {}
    assert (
        rate_limit_state({"x-ratelimit-remaining-tokens": "lots", "anthropic-ratelimit-tokens-reset": "tomorrow"}) == {}
    )
