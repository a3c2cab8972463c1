"""The latency model: time to first token plus time per output token, each with relative jitter.

A streamed reply is sent in events at most every ``stream_interval_ms`` (several tokens per event when
tokens come faster), so thousands of concurrent streams cost a bounded number of timer wake-ups.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ops.sim.config import LatencyConfig

_rng = random.Random()
ZERO_LATENCY_TOKENS_PER_EVENT = 16  # still several events, so clients' stream handling is exercised


@dataclass(slots=True)
class Pace:
    ttft_s: float
    per_token_s: float
    interval_s: float

    @property
    def is_zero(self) -> bool:
        return self.ttft_s <= 0 and self.per_token_s <= 0

    def total_s(self, tokens: int) -> float:
        return self.ttft_s + self.per_token_s * tokens

    def tokens_per_event(self) -> int:
        """How many tokens one SSE event carries so events are ``interval_s`` apart or more."""
        if self.per_token_s <= 0:
            return ZERO_LATENCY_TOKENS_PER_EVENT
        return max(1, round(self.interval_s / self.per_token_s))


def _jittered(value_ms: float, jitter: float) -> float:
    if value_ms <= 0:
        return 0.0
    if jitter:
        value_ms *= _rng.uniform(1 - jitter, 1 + jitter)
    return value_ms / 1000.0


def pace_for(config: LatencyConfig, slowdown: float = 1.0) -> Pace:
    """One request's timing, drawn once so the whole reply is consistent."""
    return Pace(
        _jittered(config.ttft_ms, config.jitter) * slowdown,
        _jittered(config.per_token_ms, config.jitter) * slowdown,
        config.stream_interval_ms / 1000.0,
    )
