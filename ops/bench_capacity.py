"""How many slow calls one api process and one worker process hold in flight, and what each costs.

    .venv/bin/python ops/bench_capacity.py [--jobs 2000] [--streams 1000] [--latency-s 20]

Starts its own simulator answering every call after ``--latency-s`` (no jitter), one worker process,
the scheduler and one api process (``ops.bench_gateway.Stack``), with budgets that do not bind, then
two phases, one after the other:

1. worker: ``--jobs`` non-streamed jobs at once (``POST /v1/jobs/batch``, standard lane), all of
   which the one worker sends; until every one has succeeded.
2. api: ``--streams`` streamed chat calls opened at once through the api (the fast lane while it has
   a free slot, the rest through the worker and the api's stream relay), each read to ``[DONE]``.

While a phase runs it samples, twice a second: the calls open at the simulator (``/sim/stats``
``in_flight``), the streams open at the client (headers received, ``[DONE]`` not yet), and each
process's RSS, threads and open files from /proc. It prints per phase the peaks, CPU per call (from
/proc, before and after) and whether every call completed correctly.

``--calls-alone N`` measures instead what the choice between a thread per call and an event loop is
about: N calls to the same simulator made at once by a bare process, on N threads over the lean pool
(``execution.providers.lean_http.post``, as a worker sends them), on N threads over the pooled
``httpx.Client`` (as it sent them before), and as coroutines over one ``httpx.AsyncClient``, each in a
fresh process: RSS and CPU per call.
One run; nothing asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from cli.health import wait_for_http
from ops.bench_gateway import ROOT, Stack, _count_in_store, _descendants, _process_tree, cpu_ms_per_job

MAX_TOKENS = 16


class CapacityStack(Stack):
    """One worker of ``concurrency`` calls, and a simulator that takes ``latency_s`` over every call."""

    def __init__(self, concurrency: int, latency_s: float) -> None:
        super().__init__(workers=1, concurrency=concurrency)
        per_token_ms = 50.0  # a streamed answer's chunks come the last ~MAX_TOKENS * 50 ms
        self.latency = {"ttft_ms": latency_s * 1000 - MAX_TOKENS * per_token_ms, "per_token_ms": per_token_ms,
                        "jitter": 0, "stream_interval_ms": per_token_ms}

    def sim_args(self) -> list[str]:
        path = Path(self.tmp) / "sim.yaml"
        limits = {"rpm": 100_000_000, "tpm": 100_000_000_000}
        path.write_text(yaml.safe_dump({"defaults": {
            "openai": {"limits": limits, "latency": self.latency, "output": {"dist": "max"}},
            "anthropic": {"limits": {"rpm": 100_000_000, "itpm": 100_000_000_000, "otpm": 100_000_000_000},
                          "latency": self.latency}}}))
        return ["--config", str(path)]

    def pids(self) -> dict[str, list[int]]:
        tree = _process_tree()
        return {name: _descendants(proc.pid, tree) for name, proc in zip(self.names, self.procs, strict=True)}


def _proc_status(pid: int) -> tuple[int, int]:
    """(RSS in KiB, threads) of ``pid``; zeros once it exited."""
    rss = threads = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    except OSError:
        pass
    return rss, threads


def _open_files(pid: int) -> int:
    try:
        return len(list(Path(f"/proc/{pid}/fd").iterdir()))
    except OSError:
        return 0


@dataclass
class Peaks:
    """The most seen while a phase ran, per process role and at the simulator and the client."""

    sim_in_flight: int = 0
    client_open: int = 0
    rss_kib: dict[str, int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)

    def sample(self, stack: CapacityStack, sim_in_flight: int, client_open: int) -> None:
        self.sim_in_flight = max(self.sim_in_flight, sim_in_flight)
        self.client_open = max(self.client_open, client_open)
        for name, pids in stack.pids().items():
            rss, threads = map(sum, zip(*(_proc_status(pid) for pid in pids), strict=True))
            self.rss_kib[name] = max(self.rss_kib.get(name, 0), rss)
            self.threads[name] = max(self.threads.get(name, 0), threads)
            self.files[name] = max(self.files.get(name, 0), sum(map(_open_files, pids)))


@dataclass
class Phase:
    name: str
    calls: int
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    peaks: Peaks = field(default_factory=Peaks)
    rss_before_kib: dict[str, int] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)

    def fail(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1


class Sampler:
    """Samples the stack twice a second while a phase runs."""

    def __init__(self, stack: CapacityStack, phase: Phase) -> None:
        self.stack, self.phase, self.client_open = stack, phase, 0
        self.sim = httpx.AsyncClient(base_url=stack.sim_url, timeout=10)

    async def run(self, done: asyncio.Event) -> None:
        while not done.is_set():
            try:
                in_flight = (await self.sim.get("/sim/stats", params={"series": 0})).json()["in_flight"]
            except httpx.HTTPError:
                in_flight = 0
            self.phase.peaks.sample(self.stack, in_flight, self.client_open)
            await asyncio.sleep(0.5)
        await self.sim.aclose()


async def run_phase(stack: CapacityStack, phase: Phase, load: Any) -> Phase:
    """Run ``load(sampler)`` while sampling; CPU and RSS before and after."""
    phase.rss_before_kib = {name: sum(_proc_status(pid)[0] for pid in pids) for name, pids in stack.pids().items()}
    sampler, done = Sampler(stack, phase), asyncio.Event()
    sampling = asyncio.create_task(sampler.run(done))
    cpu_before, started = stack.cpu_seconds(), time.perf_counter()
    await load(sampler)
    phase.elapsed_s = time.perf_counter() - started
    phase.cpu_ms = cpu_ms_per_job(cpu_before, stack.cpu_seconds(), phase.calls)
    done.set()
    await sampling
    return phase


def _client(stack: CapacityStack, key: str, connections: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(base_url=stack.api_url, limits=limits, timeout=httpx.Timeout(300, connect=60),
                             headers={"Authorization": f"Bearer {key}"})


def _body(i: int, feature: str, stream: bool = False) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "max_tokens": MAX_TOKENS, "feature": feature, "stream": stream,
            "messages": [{"role": "user", "content": f"capacity {feature} {i}"}]}


async def worker_load(stack: CapacityStack, key: str, phase: Phase, bulk: int) -> None:
    """``phase.calls`` standard-lane jobs at once, in bulk; until every one succeeded (or 10 minutes)."""
    feature = f"cap-{uuid.uuid4().hex[:6]}"
    async with _client(stack, key, 8) as client:
        posts = [client.post("/v1/jobs/batch", json={"jobs": [
            {**_body(i, feature), "priority": "standard"} for i in range(first, min(phase.calls, first + bulk))]})
            for first in range(0, phase.calls, bulk)]
        for response in await asyncio.gather(*posts):
            if not response.is_success:
                phase.fail(f"HTTP {response.status_code} on submit")
        deadline = time.monotonic() + 600
        while (done := _count_in_store(stack.database_url, feature)) < phase.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        phase.ok = done
        if done < phase.calls:
            phase.fail("not succeeded after 10 minutes")


async def stream_load(stack: CapacityStack, key: str, phase: Phase, sampler: Sampler) -> None:
    """``phase.calls`` streams opened at once through the api, each read to its end."""
    feature = f"cap-{uuid.uuid4().hex[:6]}"
    async with _client(stack, key, phase.calls + 10) as client:

        async def one(i: int) -> None:
            pieces, finished = [], False
            try:
                async with client.stream("POST", "/v1/chat/completions", json=_body(i, feature, stream=True)) as r:
                    if r.status_code != 200:
                        phase.fail(f"HTTP {r.status_code}")
                        return
                    sampler.client_open += 1
                    try:
                        async for line in r.aiter_lines():
                            finished = finished or line == "data: [DONE]"
                            if line.startswith("data: {"):
                                chunk = orjson.loads(line[6:])
                                if chunk.get("error"):
                                    phase.fail(f"error event {chunk['error'].get('type')}")
                                    return
                                pieces += [c["delta"].get("content") or "" for c in chunk.get("choices") or []]
                    finally:
                        sampler.client_open -= 1
            except httpx.HTTPError as exc:
                phase.fail(type(exc).__name__)
                return
            if finished and "".join(pieces):
                phase.ok += 1
            else:
                phase.fail("ended without [DONE] or without content")

        await asyncio.gather(*(one(i) for i in range(phase.calls)))


def _report(args: argparse.Namespace, phases: list[Phase], load: tuple[float, float, float]) -> None:
    print(f"command: {' '.join(sys.argv)}")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"simulator latency {args.latency_s:g} s per call; worker.concurrency {args.concurrency}")
    for phase in phases:
        print(f"\n{phase.name}: {phase.calls} calls, {phase.ok} completed correctly, errors "
              f"{phase.errors or 0}, {phase.elapsed_s:.1f} s")
        print(f"  peak calls in flight at the simulator: {phase.peaks.sim_in_flight}; "
              f"peak streams open at the client: {phase.peaks.client_open}")
        print(f"  {'process':<10} {'RSS before':>11} {'RSS peak':>10} {'KiB/call':>9} {'threads':>8} "
              f"{'files':>6} {'CPU ms/call':>12}")
        for name, peak in phase.peaks.rss_kib.items():
            per_call = (peak - phase.rss_before_kib.get(name, 0)) / max(phase.calls, 1)
            print(f"  {name:<10} {phase.rss_before_kib.get(name, 0) / 1024:>8.0f} MB {peak / 1024:>7.0f} MB "
                  f"{per_call:>9.1f} {phase.peaks.threads[name]:>8} {phase.peaks.files[name]:>6} "
                  f"{phase.cpu_ms.get(name, 0.0):>12.2f}")


def _calls_alone(mode: str, calls: int, sim_url: str) -> dict[str, float]:
    """In this process: ``calls`` calls at once on threads or coroutines; RSS added and CPU per call."""
    from concurrent.futures import ThreadPoolExecutor

    from execution.providers import http, lean_http
    from shared.config import Timeouts

    body, headers = orjson.dumps(_body(0, "alone")), {"Authorization": "Bearer sim", "Content-Type": "application/json"}
    url, peak = f"{sim_url}/v1/chat/completions", [0]
    rss_before, cpu_before = _proc_status(os.getpid())[0], time.process_time()

    def watch(done: threading.Event) -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _proc_status(os.getpid())[0])

    target = lean_http.target_of(url)
    assert target is not None

    def on_thread(_: int) -> bool:
        if mode == "threads":
            raw = lean_http.post(target, content=body, headers=headers, params=None, timeouts=Timeouts())
        else:
            raw = http.post(http.shared_client(), url, content=body, headers=headers, params=None, timeouts=Timeouts())
        return raw.status == 200

    async def on_loop() -> list[bool]:
        async with httpx.AsyncClient(limits=http.POOL_LIMITS, timeout=300) as client:
            async def one() -> bool:
                return (await client.post(url, content=body, headers=headers)).status_code == 200
            return await asyncio.gather(*(one() for _ in range(calls)))

    done = threading.Event()
    threading.Thread(target=watch, args=(done,), daemon=True).start()
    if mode != "asyncio":
        with ThreadPoolExecutor(calls) as pool:
            ok = sum(pool.map(on_thread, range(calls)))
    else:
        ok = sum(asyncio.run(on_loop()))
    done.set()
    return {"ok": ok, "kib_per_call": (peak[0] - rss_before) / calls,
            "cpu_ms_per_call": (time.process_time() - cpu_before) * 1000 / calls, "rss_peak_mib": peak[0] / 1024}


def compare_calls(args: argparse.Namespace) -> None:
    """``--calls-alone``: the simulator, then each way of holding the calls in a process of its own."""
    stack = CapacityStack(args.concurrency, args.latency_s)
    stack._spawn("ops.sim", "--port", str(stack.sim_port), *stack.sim_args())
    try:
        wait_for_http(f"{stack.sim_url}/healthz", stack.procs)
        print(f"command: {' '.join(sys.argv)}\nload average at start: {os.getloadavg()[0]:.2f}; "
              f"{args.calls_alone} calls at once, {args.latency_s:g} s each")
        for mode in ("threads", "httpx-threads", "asyncio"):
            out = subprocess.run([sys.executable, "-m", "ops.bench_capacity", "--one-way", mode, "--calls-alone",
                                  str(args.calls_alone), "--sim-url", stack.sim_url],
                                 cwd=ROOT, check=True, capture_output=True, text=True).stdout
            got = orjson.loads(out.strip().splitlines()[-1])
            print(f"  {mode:<13} {got['ok']:.0f} ok | RSS peak {got['rss_peak_mib']:.0f} MB, "
                  f"{got['kib_per_call']:.1f} KiB per call | CPU {got['cpu_ms_per_call']:.2f} ms per call")
    finally:
        stack.stop()


def _raise_fd_limit() -> None:
    """Thousands of sockets per process: the soft limit up to the hard one (inherited by the stack)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=2000, help="non-streamed jobs at once (0 skips the phase)")
    parser.add_argument("--streams", type=int, default=1000, help="streams opened at once (0 skips the phase)")
    parser.add_argument("--latency-s", type=float, default=20.0, help="the simulator's time per call")
    parser.add_argument("--concurrency", type=int, default=2048, help="the worker's worker.concurrency")
    parser.add_argument("--bulk", type=int, default=500, help="jobs per POST /v1/jobs/batch")
    parser.add_argument("--calls-alone", type=int, default=0, help="compare N bare calls on threads and on a loop")
    parser.add_argument("--one-way", choices=("threads", "httpx-threads", "asyncio"), help=argparse.SUPPRESS)
    parser.add_argument("--sim-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _raise_fd_limit()
    if args.one_way:
        print(orjson.dumps(_calls_alone(args.one_way, args.calls_alone, args.sim_url)).decode())
        return
    if args.calls_alone:
        compare_calls(args)
        return
    load = os.getloadavg()
    stack, phases = CapacityStack(args.concurrency, args.latency_s), []
    try:
        key = stack.start()
        if args.jobs:
            phase = Phase("worker: non-streamed jobs, POST /v1/jobs/batch (standard lane)", args.jobs)
            phases.append(asyncio.run(run_phase(stack, phase, lambda _: worker_load(stack, key, phase, args.bulk))))
        if args.streams:
            phase = Phase("api: streamed chat calls through one api process", args.streams)
            phases.append(asyncio.run(run_phase(stack, phase, lambda s: stream_load(stack, key, phase, s))))
    finally:
        stack.stop()
        print(f"logs in {stack.tmp}")
    _report(args, phases, load)


if __name__ == "__main__":
    main()
