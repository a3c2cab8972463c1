"""What the benchmark watches while things break: the simulator per model, and the breakers' log.

The breakers' transition log lives in the gateway's Redis, which the benchmark kills; so the log is
read every half second and every transition kept here (the log is a list of unique moves, newest
first). The simulator's counters are read at the same pace, summed per model over its keys, so the
primary's accepted requests per second can be followed through the outage and the recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import redis

from shared.breaker import Breakers, Transition
from shared.keys import Keys

SAMPLE_S = 0.5
COUNTERS = ("requests", "admitted", "succeeded")


@dataclass
class Watched:
    """Samples ``{"t", "models": {model: {requests, admitted, succeeded, faults, rate_limited}}}``
    and every breaker transition seen, oldest first."""

    samples: list[dict[str, Any]] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)
    unreadable: int = 0  # breaker log reads that failed (Redis down)


def per_model(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    """The simulator's per-key-and-model counters summed per model."""
    out: dict[str, dict[str, int]] = {}
    for row in stats.get("by_key_model", []):
        model = out.setdefault(row["model"], {name: 0 for name in (*COUNTERS, "faults", "rate_limited")})
        for name in COUNTERS:
            model[name] += int(row[name])
        model["faults"] += sum(row["faults"].values())
        model["rate_limited"] += sum(row["rate_limited"].values())
    return out


class Watch:
    def __init__(self, sim_url: str, redis_url: str, key_prefix: str, deployments: list[str]) -> None:
        self.sim_url = sim_url
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        self.breakers = Breakers(client, Keys(key_prefix), {})
        self.deployments = deployments
        self.seen: set[tuple[str, str, float]] = set()
        self.out = Watched()

    async def run(self, stop: asyncio.Event) -> Watched:
        async with httpx.AsyncClient(timeout=5) as client:
            while not stop.is_set():
                await self._sample(client)
                await asyncio.to_thread(self._read_breakers)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=SAMPLE_S)
            await self._sample(client)
        await asyncio.to_thread(self._read_breakers)
        self.out.transitions.sort(key=lambda t: t.at)
        return self.out

    async def _sample(self, client: httpx.AsyncClient) -> None:
        try:
            stats = (await client.get(f"{self.sim_url}/sim/stats", params={"series": 0})).json()
        except httpx.HTTPError:
            return
        self.out.samples.append({"t": time.time(), "models": per_model(stats), "in_flight": stats.get("in_flight")})

    def _read_breakers(self) -> None:
        for deployment in self.deployments:
            try:
                moves = self.breakers.transitions(deployment)
            except redis.RedisError:
                self.out.unreadable += 1
                return
            for move in moves:
                key = (move.deployment, move.to_state, move.at)
                if key not in self.seen:
                    self.seen.add(key)
                    self.out.transitions.append(move)
