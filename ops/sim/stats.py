"""What the simulated provider saw, per API key and model, plus bucket levels sampled over time.

A benchmark reads ``GET /sim/stats`` to compute utilisation from the provider's side: tokens admitted
per interval against the configured limit, and 429s by reason (the binding axis, ``too_large`` or
``storm``).
"""

from __future__ import annotations

import asyncio
from collections import Counter, deque
from dataclasses import dataclass, field

from ops.sim.config import StatsConfig
from ops.sim.limits import Clock, Limiter


@dataclass(slots=True)
class Counters:
    requests: int = 0
    admitted: int = 0
    succeeded: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    charged_tokens: int = 0  # what the meter took at admission on the token axes
    rate_limited: Counter = field(default_factory=Counter)
    faults: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "admitted": self.admitted, "succeeded": self.succeeded,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "charged_tokens": self.charged_tokens,
            "rate_limited": dict(self.rate_limited), "faults": dict(self.faults),
        }

    def add(self, other: Counters) -> None:
        self.requests += other.requests
        self.admitted += other.admitted
        self.succeeded += other.succeeded
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.charged_tokens += other.charged_tokens
        self.rate_limited.update(other.rate_limited)
        self.faults.update(other.faults)


class Stats:
    def __init__(self, clock: Clock, limiter: Limiter, config: StatsConfig) -> None:
        self.clock = clock
        self.limiter = limiter
        self.config = config
        self.in_flight = 0  # open HTTP requests right now, and the most seen since the last reset
        self.reset()

    def reset(self) -> None:
        self.started = self.clock()
        self.per: dict[tuple[str, str], Counters] = {}
        self.series: deque[dict] = deque(maxlen=self.config.history)
        self.peak_in_flight = self.in_flight

    def counters(self, key: str, model: str) -> Counters:
        found = self.per.get((key, model))
        if found is None:
            found = self.per[(key, model)] = Counters()
        return found

    def totals(self) -> Counters:
        total = Counters()
        for counters in self.per.values():
            total.add(counters)
        return total

    def sample(self) -> dict:
        point = {
            "t": round(self.clock() - self.started, 3),
            "buckets": self.limiter.levels(),
            "totals": self.totals().as_dict(),
            "in_flight": self.in_flight,
        }
        self.series.append(point)
        return point

    async def sample_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.sample_interval_s)
            self.sample()

    def snapshot(self, include_series: bool = True) -> dict:
        data = {
            "uptime_s": round(self.clock() - self.started, 3),
            "totals": self.totals().as_dict(),
            "in_flight": self.in_flight, "peak_in_flight": self.peak_in_flight,
            "by_key_model": [
                {"key": key, "model": model, **c.as_dict()} for (key, model), c in self.per.items()
            ],
            "buckets": self.limiter.levels(),
        }
        if include_series:
            data["series"] = list(self.series)
        return data
