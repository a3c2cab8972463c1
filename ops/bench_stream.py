"""What the gateway adds to a streamed call: time to first token, the gaps between chunks, and whether
every chunk arrives, in order.

    .venv/bin/python ops/bench_stream.py [--streams 50] [--pairs 300] [--ttft-ms 300] [--per-token-ms 10]

Starts its own simulator (streaming at the given latency, no jitter: the same request streams the
same chunks at the same times), worker, scheduler and api (``ops.bench_gateway.Stack``), then per
path (the fast lane: the api sends the call; through a worker: ``X-Gateway-Priority: standard``)
sends ``--pairs`` requests open loop, at the rate that keeps ``--streams`` open at once, each one
straight to the simulator and through the gateway at the same moment, and pairs them:

- TTFT added: (first content chunk through the gateway) - (the same, direct), p50 and p99;
- gap added: each inter-chunk gap through the gateway minus the same gap direct, p50 and p99;
- chunks lost or reordered: pairs whose content pieces differ (must be 0).

Also the CPU each process spent per stream. One run, side by side; nothing here asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from ops.bench_gateway import Stack, cpu_ms_per_job, pct

MAX_TOKENS = 60  # the default of --max-tokens


class StreamingStack(Stack):
    """The benchmark stack with a simulator that streams at a fixed latency."""

    def __init__(self, ttft_ms: float, per_token_ms: float) -> None:
        super().__init__(workers=1, concurrency=64)
        self.latency = {"ttft_ms": ttft_ms, "per_token_ms": per_token_ms, "jitter": 0}

    def sim_args(self) -> list[str]:
        path = Path(self.tmp) / "sim.yaml"
        path.write_text(yaml.safe_dump({"defaults": {
            "openai": {"limits": {"rpm": 100_000_000, "tpm": 100_000_000_000}, "latency": self.latency},
            "anthropic": {"limits": {"rpm": 100_000_000, "itpm": 100_000_000_000, "otpm": 100_000_000_000},
                          "latency": self.latency}}}))
        return ["--config", str(path)]


@dataclass
class Timed:
    """One stream as the client saw it: its content pieces and when each arrived (from the request)."""

    pieces: list[str] = field(default_factory=list)
    at: list[float] = field(default_factory=list)
    error: str | None = None


async def one_stream(client: httpx.AsyncClient, body: dict[str, Any], headers: dict[str, str]) -> Timed:
    timed, started = Timed(), time.perf_counter()
    try:
        async with client.stream("POST", "/chat/completions", json=body, headers=headers) as r:
            if r.status_code != 200:
                timed.error = f"HTTP {r.status_code}"
                return timed
            async for line in r.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                chunk = orjson.loads(line[6:])
                if chunk.get("error"):
                    timed.error = str(chunk["error"])
                    return timed
                delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
                if delta.get("content"):
                    timed.pieces.append(delta["content"])
                    timed.at.append(time.perf_counter() - started)
    except httpx.HTTPError as exc:
        timed.error = type(exc).__name__
    return timed


@dataclass
class PathResult:
    ttft_added: list[float] = field(default_factory=list)
    gap_added: list[float] = field(default_factory=list)
    direct_ttft: list[float] = field(default_factory=list)
    gateway_ttft: list[float] = field(default_factory=list)
    mismatched: int = 0
    errors: int = 0
    pairs: int = 0
    cpu_ms: dict[str, float] = field(default_factory=dict)


async def measure(stack: Stack, key: str, headers: dict[str, str], streams: int, pairs: int,
                  rate: float, max_tokens: int) -> PathResult:
    """``pairs`` requests arriving open loop at ``rate``/s (so that ~``streams`` are open on each side),
    each sent straight to the simulator and through the gateway at the same moment."""
    limits = httpx.Limits(max_connections=streams * 4, max_keepalive_connections=streams * 4)
    direct = httpx.AsyncClient(base_url=f"{stack.sim_url}/v1", limits=limits, timeout=120,
                               headers={"Authorization": "Bearer sim"})
    gateway = httpx.AsyncClient(base_url=f"{stack.api_url}/v1", limits=limits, timeout=120,
                                headers={"Authorization": f"Bearer {key}", **headers})
    result = PathResult()

    async def pair(record: bool) -> None:
        body = {"model": "gpt-4o-mini", "max_tokens": max_tokens, "stream": True,
                "messages": [{"role": "user", "content": f"stream {uuid.uuid4().hex}"}]}
        straight, through = await asyncio.gather(one_stream(direct, body, {}), one_stream(gateway, body, {}))
        if record:
            _pair(result, straight, through)

    await asyncio.gather(*(pair(False) for _ in range(10)))  # warm-up: connections, first calls
    cpu_before = stack.cpu_seconds()
    start, tasks = time.perf_counter(), []
    for i in range(pairs):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(pair(True)))
    await asyncio.gather(*tasks)
    result.cpu_ms = cpu_ms_per_job(cpu_before, stack.cpu_seconds(), pairs)
    await direct.aclose()
    await gateway.aclose()
    return result


def _pair(result: PathResult, direct: Timed, through: Timed) -> None:
    if direct.error or through.error or not direct.at or not through.at:
        result.errors += 1
        return
    result.pairs += 1
    if direct.pieces != through.pieces:
        result.mismatched += 1
        return
    result.direct_ttft.append(direct.at[0] * 1000)
    result.gateway_ttft.append(through.at[0] * 1000)
    result.ttft_added.append((through.at[0] - direct.at[0]) * 1000)
    for k in range(1, len(direct.at)):
        result.gap_added.append(((through.at[k] - through.at[k - 1]) - (direct.at[k] - direct.at[k - 1])) * 1000)


def report(name: str, r: PathResult) -> None:
    print(f"\n{name}: {r.pairs} pairs, {r.errors} errors, chunks lost or reordered in {r.mismatched}")
    if r.ttft_added:
        print(f"  TTFT direct p50 {statistics.median(r.direct_ttft):.1f} ms, through the gateway p50 "
              f"{statistics.median(r.gateway_ttft):.1f} ms")
        print(f"  TTFT added   p50 {statistics.median(r.ttft_added):6.2f} ms   p99 {pct(r.ttft_added, 0.99):6.2f} ms")
    if r.gap_added:
        print(f"  gap added    p50 {statistics.median(r.gap_added):6.2f} ms   p99 {pct(r.gap_added, 0.99):6.2f} ms "
              f"({len(r.gap_added)} gaps)")
    print("  CPU per stream: " + ", ".join(f"{k} {v:.2f} ms" for k, v in sorted(r.cpu_ms.items())))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=50, help="streams open at once on each side")
    parser.add_argument("--pairs", type=int, default=300, help="streams measured per path")
    parser.add_argument("--ttft-ms", type=float, default=300.0)
    parser.add_argument("--per-token-ms", type=float, default=10.0)
    parser.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    args = parser.parse_args()
    stack = StreamingStack(args.ttft_ms, args.per_token_ms)
    key = stack.start()
    lasts_s = (args.ttft_ms + args.max_tokens * args.per_token_ms) / 1000  # roughly: the simulator's answers vary
    rate = args.streams / lasts_s
    try:
        print(f"~{args.streams} streams open on each side ({rate:.0f} new per second), {args.pairs} per path; "
              f"simulator TTFT {args.ttft_ms:g} ms, {args.per_token_ms:g} ms per token, "
              f"{args.max_tokens} tokens at most")
        for name, headers in (("fast lane (the api sends the call)", {}),
                              ("through a worker (priority standard)", {"X-Gateway-Priority": "standard"})):
            report(name, await measure(stack, key, headers, args.streams, args.pairs, rate, args.max_tokens))
    finally:
        stack.stop()


if __name__ == "__main__":
    asyncio.run(main())
