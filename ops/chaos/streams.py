"""Streaming callers open while a worker is killed: each must get the full answer or a clean error event.

They send ``stream: true`` with ``X-Gateway-Priority: standard``, so a worker sends the call and the
api relays the job's stream (the path a kill -9 of a worker cuts); half in OpenAI's dialect
(``/v1/chat/completions``), half in Anthropic's (``/v1/messages``), on the load balancer's round robin.
Each is read until its dialect's last event or an error event, at most ``stream_wait_s``: one not
ended by then is a hang. ``ops.chaos.measure.streams`` compares what each read with its job's stored
answer.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import httpx

from ops.chaos.caller import ChaosCaller
from ops.chaos.plan import STREAM_MODEL, ChaosPlan
from ops.storm.streamed import Streamed

FEATURE = "assistant"
MAX_TOKENS = 500
HEADERS = {"x-gateway-feature": FEATURE, "x-gateway-priority": "standard"}  # a worker sends it


@dataclass
class StreamCall:
    """One streaming caller: what it read, and how it ended for it ("hang", a transport error's name,
    or None when it read to the end of what the api sent)."""

    tenant: str
    anthropic: bool
    sent: float
    got: Streamed
    done: float | None = None
    failure: str | None = None


def request(tenant: str, i: int) -> dict[str, Any]:
    rng = random.Random(f"stream:{tenant}:{i}")
    words = " ".join(rng.choice(("river", "stone", "lamp", "orbit", "cedar", "pixel")) for _ in range(20))
    return {"model": STREAM_MODEL, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": f"Write a long story for {tenant}: {words}"}]}


async def one(plan: ChaosPlan, caller: ChaosCaller, call: StreamCall, body: dict[str, Any]) -> None:
    try:
        async with asyncio.timeout(plan.stream_wait_s):
            path = "/v1/messages" if call.anthropic else "/v1/chat/completions"
            await caller.stream(call.tenant, path, {**body, "stream": True}, HEADERS, call.got)
    except TimeoutError:
        call.failure = "hang"
    except httpx.HTTPError as exc:
        call.failure = type(exc).__name__
    call.done = time.time()


async def stream_traffic(plan: ChaosPlan, caller: ChaosCaller, calls: list[StreamCall], t0: float) -> None:
    """Poisson arrivals over the window ``plan.streams_s``, every other one in Anthropic's dialect; returns
    when every stream has ended (each is bounded by ``stream_wait_s``)."""
    rng = random.Random(f"{plan.scenario.seed}:streams")
    start, stop = plan.streams_s
    await asyncio.sleep(max(0.0, t0 + start - time.time()))
    tasks = []
    i = 0
    while time.time() < t0 + stop:
        tenant = rng.choice(plan.scenario.tenant_ids)
        call = StreamCall(tenant, anthropic=i % 2 == 1, sent=time.time(), got=Streamed())
        calls.append(call)
        tasks.append(asyncio.create_task(one(plan, caller, call, request(tenant, i))))
        i += 1
        await asyncio.sleep(rng.expovariate(plan.stream_rate))
    await asyncio.gather(*tasks)
