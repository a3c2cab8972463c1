"""What the benchmark watches while things break: the simulator per model, the breakers' log, the
attempt leases a kill left behind, and the leader lease after the leader is killed.

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
LEASE_SAMPLE_S = 0.25
LEADER_SAMPLE_S = 0.01
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


def leases_now(client: redis.Redis, keys: Keys, job_ids: list[str]) -> dict[str, str]:
    """The token of each of these jobs' live attempt lease (jobs without one are left out)."""
    if not job_ids:
        return {}
    values = client.mget([keys.lease(j) for j in job_ids])
    return {j: v.decode() if isinstance(v, bytes) else str(v) for j, v in zip(job_ids, values, strict=True) if v}


def lease_ttls_ms(client: redis.Redis, keys: Keys, job_ids: list[str]) -> dict[str, int]:
    """How long each of these leases has left (ms): at most ``attempt_lease_s`` for a call's lease kept
    by a heartbeat, up to ``dispatch_lease_s`` for a dispatch no worker has taken yet."""
    with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.pttl(keys.lease(job_id))
        return dict(zip(job_ids, (int(ttl) for ttl in pipe.execute()), strict=True))


class LeaseWatch:
    """The attempt leases live at a kill, followed until the run ends: when each first held another
    token (a new dispatch: how recovery sends an orphaned attempt again, or a retry is admitted)."""

    def __init__(self, redis_url: str, keys: Keys, tokens: dict[str, str]) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=0.3, socket_timeout=1)
        self.keys = keys
        self.tokens = tokens
        self.new_token_at: dict[str, float] = {}

    async def run(self, stop: asyncio.Event) -> dict[str, float]:
        while not stop.is_set() and len(self.new_token_at) < len(self.tokens):
            await asyncio.to_thread(self._sample)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=LEASE_SAMPLE_S)
        return self.new_token_at

    def _sample(self) -> None:
        pending = [j for j in self.tokens if j not in self.new_token_at]
        try:
            now_held = leases_now(self.client, self.keys, pending)
        except redis.RedisError:  # Redis restarting: the next sample
            return
        now = time.time()
        for job_id, token in now_held.items():
            if token != self.tokens[job_id]:
                self.new_token_at[job_id] = now


def wait_for_new_leader(redis_url: str, keys: Keys, old: str, timeout_s: float = 30.0) -> tuple[float, str | None]:
    """Read the leader lease every 10 ms until another scheduler holds it: (when, its instance id)."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_connect_timeout=0.3, socket_timeout=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            holder = client.get(keys.leader)
            if holder and holder != old:
                return time.time(), str(holder)
        time.sleep(LEADER_SAMPLE_S)
    return time.time(), None
