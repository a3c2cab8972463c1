"""Benchmark one simulator process: requests/s at zero latency, and 5,000 concurrent slow requests.

    .venv/bin/python ops/bench_sim.py [--rounds 5] [--round-s 3] [--open 5000]

Starts ``python -m ops.sim`` as a subprocess (limits high enough never to bind), then drives it from
separate load-generator processes: plain asyncio sockets with keep-alive and pre-built requests, so
the client costs little CPU next to the server on a small machine. Prints the median of the rounds.
Phase 2 restarts the simulator with the realistic latency model (TTFT ~400 ms + 15 ms/token, +-25%),
opens N connections at once, sends one chat completion on each and reports how many were open at the
same time (from the simulator's own ``peak_in_flight``), their latency and the failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = 500  # distinct prompts cycled by the load (tokenizer and reply caches do help, as in real repeats)


def request_bytes(i: int, max_tokens: int) -> bytes:
    body = json.dumps({
        "model": "gpt-4o-mini", "max_tokens": max_tokens,
        "messages": [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": f"Question {i}: explain rate limits briefly."}],
    }).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer sk-bench\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    return head + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


# ---- load generator (runs in child processes)

async def closed_loop(port: int, connections: int, seconds: float, offset: int) -> dict:
    """Each connection sends the next request as soon as the previous answer is read."""
    payloads = [request_bytes(offset + i, 64) for i in range(PROMPTS)]
    deadline = time.perf_counter() + seconds
    done, errors = 0, 0

    async def one_connection(n: int) -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = n
        while time.perf_counter() < deadline:
            writer.write(payloads[i % PROMPTS])
            status = await read_response(reader)
            done += 1
            errors += status != 200
            i += connections
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(n) for n in range(connections)))
    return {"done": done, "errors": errors, "elapsed": time.perf_counter() - started}


async def open_burst(port: int, connections: int, offset: int) -> dict:
    """Open every connection, then send one request on each and wait for all answers."""
    opened = []
    for start in range(0, connections, 500):  # connect in waves: the listen backlog is finite
        opened += await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                         for _ in range(start, min(connections, start + 500))))
    latencies: list[float] = []
    failures = 0

    async def one(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal failures
        t0 = time.perf_counter()
        writer.write(request_bytes(offset + n, 150))
        try:
            status = await read_response(reader)
        except (OSError, asyncio.IncompleteReadError):
            status = 0
        latencies.append(time.perf_counter() - t0)
        failures += status != 200
        writer.close()

    await asyncio.gather(*(one(n, r, w) for n, (r, w) in enumerate(opened)))
    return {"latencies": latencies, "failures": failures}


def child_main(args: argparse.Namespace) -> None:
    from ops.sim.server import _loop_factory, raise_fd_limit

    raise_fd_limit()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        if args.mode == "closed":
            result = runner.run(closed_loop(args.port, args.connections, args.seconds, args.offset))
        else:
            result = runner.run(open_burst(args.port, args.connections, args.offset))
    print(json.dumps(result), flush=True)


# ---- orchestration

def start_sim(*flags: str) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.sim", "--port", "0", "--rpm", "1000000000", "--tpm", "1000000000000",
         *flags], cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline() if proc.stdout else ""
    if "listening on" not in line:
        proc.kill()
        raise SystemExit(f"simulator did not start: {line!r}")
    return proc, int(line.rsplit(":", 1)[1])


def run_children(mode: str, port: int, workers: int, connections: int, seconds: float = 0) -> list[dict]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--child", mode, "--port", str(port), "--connections",
             str(connections // workers), "--seconds", str(seconds), "--offset", str(w * 100_000)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        for w in range(workers)
    ]
    return [json.loads(p.communicate()[0]) for p in procs]


def sim_stats(port: int) -> dict:
    import httpx

    return httpx.get(f"http://127.0.0.1:{port}/sim/stats?series=0", timeout=30).json()


def bench_zero_latency(rounds: int, round_s: float, workers: int, connections: int) -> None:
    proc, port = start_sim("--latency", "zero")
    try:
        run_children("closed", port, workers, connections, 1.0)  # warm-up
        rates, errors = [], 0
        for _ in range(rounds):
            results = run_children("closed", port, workers, connections, round_s)
            done = sum(r["done"] for r in results)
            errors += sum(r["errors"] for r in results)
            rates.append(done / max(r["elapsed"] for r in results))
        print(f"zero latency: {statistics.median(rates):,.0f} req/s median of {rounds} rounds x {round_s:g}s "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f}); {workers} load processes x "
              f"{connections // workers} keep-alive connections; non-200: {errors}")
    finally:
        proc.terminate()
        proc.wait()


def bench_open_requests(total: int, workers: int) -> None:
    proc, port = start_sim("--latency", "realistic")
    try:
        started = time.perf_counter()
        results = run_children("open", port, workers, total)
        wall = time.perf_counter() - started
        latencies = sorted(x for r in results for x in r["latencies"])
        failures = sum(r["failures"] for r in results)
        stats = sim_stats(port)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(f"latency model: {len(latencies):,} requests on {len(latencies):,} connections, peak open in "
              f"the simulator {stats['peak_in_flight']:,}; latency median {statistics.median(latencies):.2f}s, "
              f"p99 {p99:.2f}s (model: 0.4s TTFT + 15ms/token, median reply 120 tokens); failures {failures}; "
              f"wall {wall:.1f}s")
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=["closed", "open"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--offset", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-s", type=float, default=3.0)
    parser.add_argument("--workers", type=int, default=1, help="load-generator processes")
    parser.add_argument("--open", type=int, default=5000, help="concurrent requests in phase 2")
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child_main(args)
        return
    print(f"simulator benchmark on {os.cpu_count()} cores (one simulator process)")
    bench_zero_latency(args.rounds, args.round_s, args.workers, args.connections)
    bench_open_requests(args.open, max(1, args.workers))


if __name__ == "__main__":
    main()
