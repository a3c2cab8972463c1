"""The provider's own rate-limit meter, read from response headers, so budgets can follow the truth.

OpenAI sends ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as Go-style durations
(``6m0s``, ``1.5s``, ``20ms``). Anthropic sends ``anthropic-ratelimit-{requests,tokens,input-tokens,
output-tokens}-{limit,remaining,reset}`` with resets as RFC 3339 instants. Both become one dict.
"""

from __future__ import annotations

import re
import time
from datetime import datetime

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_AXES = {
    "requests": "requests", "tokens": "tokens",
    "input-tokens": "input_tokens", "output-tokens": "output_tokens",
}


def rate_limit_state(headers: dict[str, str], now: float | None = None) -> dict[str, float]:
    """``{axis}_limit``, ``{axis}_remaining`` and ``{axis}_reset_s`` for each axis the headers mention.

    Axes: requests, tokens, input_tokens, output_tokens. Keys whose header is absent or unreadable are
    left out rather than guessed. ``headers`` must have lower-cased names (as ``ProviderResult`` has).
    """
    now = time.time() if now is None else now
    state: dict[str, float] = {}
    for header_axis, axis in _AXES.items():
        _read_openai(headers, header_axis, axis, state)
        _read_anthropic(headers, header_axis, axis, now, state)
    return state


def _read_openai(headers: dict[str, str], header_axis: str, axis: str, state: dict[str, float]) -> None:
    for field in ("limit", "remaining"):
        _put(state, f"{axis}_{field}", number(headers.get(f"x-ratelimit-{field}-{header_axis}")))
    _put(state, f"{axis}_reset_s", parse_duration(headers.get(f"x-ratelimit-reset-{header_axis}")))


def _read_anthropic(
    headers: dict[str, str], header_axis: str, axis: str, now: float, state: dict[str, float]
) -> None:
    prefix = f"anthropic-ratelimit-{header_axis}"
    for field in ("limit", "remaining"):
        _put(state, f"{axis}_{field}", number(headers.get(f"{prefix}-{field}")))
    _put(state, f"{axis}_reset_s", _seconds_until(headers.get(f"{prefix}-reset"), now))


def _put(state: dict[str, float], key: str, value: float | None) -> None:
    if value is not None:
        state[key] = value


def number(value: str | None) -> float | None:
    """A header value as a float; None when absent or not a number."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_duration(value: str | None) -> float | None:
    """Seconds in a Go-style duration such as ``1h2m3.5s`` or ``20ms``; None when unreadable."""
    if not value:
        return None
    text = value.strip()
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return number(text)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _seconds_until(value: str | None, now: float) -> float | None:
    if not value:
        return None
    try:
        instant = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if instant.tzinfo is None:
        return None
    return max(instant.timestamp() - now, 0.0)
