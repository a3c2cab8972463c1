"""What the gateway adds to a call, and how many jobs per second flow through the whole path.

    .venv/bin/python ops/bench_gateway.py [--rate 100] [--seconds 20] [--jobs 3000] [--bulk-jobs 6000]

Starts its own simulator (zero latency), worker, scheduler and api on free ports with a private
Redis prefix and a temp SQLite file, then measures, in one run:

1. Added latency on the fast lane: pairs of calls (direct to the simulator, then the same request
   through the gateway) at a fixed open-loop rate; prints median and p99 of the per-pair difference.
2. Throughput: N async jobs submitted at once (batch lane), time until the last one succeeded; once
   with one request per job, once in bulk (POST /v1/jobs/batch), as an overnight batch would send them.

Both phases also print the CPU time each process (children included) spent per request or job,
read from /proc before and after: where the cores go, whatever the wall-clock numbers say.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import yaml

from cli.health import NotReady, wait_for_http

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS_PER_CLIENT = 8
PAYLOAD = {"model": "gpt-4o-mini", "max_tokens": 16,
           "messages": [{"role": "user", "content": "How far is the moon?"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_config(sim_port: int) -> str:
    """The test suite's config without its small queue caps (the run submits thousands at once) and
    its short client timeouts (a loaded machine may take longer than those to send a request)."""
    config = yaml.safe_load((ROOT / "tests" / "gateway.test.yaml").read_text()
                            .replace("${SIM_PORT}", str(sim_port)))
    config.pop("api", None)
    for lane in config.get("lanes", {}).values():
        lane.pop("max_queue_per_tenant", None)
    return yaml.safe_dump(config)


class Stack:
    """Simulator + worker + scheduler + api as child processes with a private environment."""

    def __init__(self, workers: int, concurrency: int, database_url: str | None = None,
                 with_api: bool = True) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
        self.sim_port, self.api_port = free_port(), free_port()
        config = self.tmp / "gateway.yaml"
        config.write_text(bench_config(self.sim_port))
        self.database_url = database_url or f"sqlite:///{self.tmp / 'gateway.db'}"
        self.env = {**os.environ, "GATEWAY_CONFIG": str(config),
                    "GATEWAY_KEY_PREFIX": f"gwb{uuid.uuid4().hex[:6]}",
                    "GATEWAY_DATABASE_URL": self.database_url,
                    "GATEWAY_LOG_LEVEL": "WARNING", "SIM_OPENAI_KEY": "sk-sim", "SIM_ANTHROPIC_KEY": "sk-sim"}
        self.workers, self.concurrency, self.with_api = workers, concurrency, with_api
        self.procs: list[subprocess.Popen[bytes]] = []
        self.names: list[str] = []

    def _spawn(self, *args: str) -> None:
        name = args[1] if args[0] == "cli" else args[0]
        log = open(self.tmp / f"{name}-{len(self.procs)}.log", "wb")  # noqa: SIM115
        self.procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=self.env,
                                           stdout=log, stderr=subprocess.STDOUT))
        self.names.append(name)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) used so far by each role, its child processes included."""
        tree = _process_tree()
        used: dict[str, float] = {}
        for name, proc in zip(self.names, self.procs, strict=True):
            used[name] = used.get(name, 0.0) + sum(_cpu_of(pid) for pid in _descendants(proc.pid, tree))
        return used

    def start(self) -> str:
        subprocess.run([sys.executable, "-m", "cli", "migrate"], cwd=ROOT, env=self.env, check=True,
                       capture_output=True)
        key = subprocess.run(
            [sys.executable, "-c", "from shared.db.session import session_scope;"
             "from shared.db.tenants import ensure_tenant, create_key\n"
             "with session_scope() as db:\n ensure_tenant(db, 'acme'); print(create_key(db, 'acme')[1])"],
            cwd=ROOT, env=self.env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        self._spawn("ops.sim", "--port", str(self.sim_port), *self.sim_args())
        for _ in range(self.workers):
            self._spawn("cli", "worker", "--concurrency", str(self.concurrency))
        self._spawn("cli", "scheduler")
        urls = [f"{self.sim_url}/healthz"]
        if self.with_api:  # else the caller runs the api itself (ops/bench_ab.py)
            self._spawn("cli", "api", "--port", str(self.api_port))
            urls.append(f"{self.api_url}/readyz")
        for url in urls:
            try:
                wait_for_http(url, self.procs)
            except NotReady as exc:
                raise SystemExit(f"{exc}; logs in {self.tmp}") from exc
        time.sleep(2)  # let the worker finish connecting to its queues
        return key

    def sim_args(self) -> list[str]:
        """How the simulator is configured: no limit that binds, zero latency (a subclass may give a file)."""
        return ["--rpm", "100000000", "--tpm", "100000000000"]

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (which may contain spaces); empty once it exited."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return []
    return raw[raw.rindex(")") + 2:].split()


def _cpu_of(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / _TICKS if fields else 0.0  # utime + stime


def _process_tree() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _descendants(pid: int, tree: dict[int, list[int]]) -> list[int]:
    found, todo = [], [pid]
    while todo:
        found.append(current := todo.pop())
        todo.extend(tree.get(current, []))
    return found


def cpu_ms_per_job(before: dict[str, float], after: dict[str, float], jobs: int) -> dict[str, float]:
    return {name: (after[name] - before.get(name, 0.0)) * 1000 / max(jobs, 1) for name in after}


async def added_latency(stack: Stack, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """Open-loop pairs at ``rate``/s: direct call then gateway call; differences in ms."""
    limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
    direct = httpx.AsyncClient(base_url=f"{stack.sim_url}/v1", limits=limits, timeout=30,
                               headers={"Authorization": "Bearer sim"})
    gateway = httpx.AsyncClient(base_url=f"{stack.api_url}/v1", limits=limits, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})
    diffs: list[float] = []
    direct_ms: list[float] = []
    gateway_ms: list[float] = []
    errors = 0

    async def pair(i: int) -> None:
        nonlocal errors
        body = {**PAYLOAD, "messages": [{"role": "user", "content": f"question {i}"}]}
        t0 = time.perf_counter()
        try:
            r1 = await direct.post("/chat/completions", json=body)
            t1 = time.perf_counter()
            r2 = await gateway.post("/chat/completions", json=body)
            t2 = time.perf_counter()
        except httpx.TransportError:  # e.g. a keep-alive connection the server closed: counted, not fatal
            errors += 1
            return
        if r1.status_code != 200 or r2.status_code != 200:
            errors += 1
            return
        direct_ms.append((t1 - t0) * 1000)
        gateway_ms.append((t2 - t1) * 1000)
        diffs.append(((t2 - t1) - (t1 - t0)) * 1000)

    for i in range(50):  # warm-up: connections, caches
        await pair(i)
    for samples in (diffs, direct_ms, gateway_ms):
        samples.clear()
    tasks = []
    cpu_before = stack.cpu_seconds()
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(pair(i)))
    await asyncio.gather(*tasks)
    cpu = cpu_ms_per_job(cpu_before, stack.cpu_seconds(), n)
    await direct.aclose()
    await gateway.aclose()
    return {"cpu_ms": cpu, "pairs": len(diffs), "errors": errors, "direct_p50": statistics.median(direct_ms),
            "gateway_p50": statistics.median(gateway_ms), "added_p50": statistics.median(diffs),
            "added_p90": pct(diffs, 0.90), "added_p99": pct(diffs, 0.99)}


async def throughput(stack: Stack, key: str, jobs: int, bulk: int = 0, concurrency: int = 64) -> dict[str, Any]:
    """``jobs`` batch-lane jobs submitted at once (one request each, or ``bulk`` per POST /v1/jobs/batch);
    time until the last one succeeded."""
    # Several small pools, not one of 64 connections: httpcore scans its whole pool on every request,
    # and one client of 64 was itself the bottleneck (~100 requests/s at 90% of a core).
    clients = [httpx.AsyncClient(base_url=stack.api_url, timeout=60, headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=CONNECTIONS_PER_CLIENT))
               for _ in range(max(1, concurrency // CONNECTIONS_PER_CLIENT))]
    feature = f"bench-{uuid.uuid4().hex[:6]}"
    sem = asyncio.Semaphore(concurrency)
    ids: list[str] = []

    def job(i: int) -> dict[str, Any]:
        return {**PAYLOAD, "feature": feature, "priority": "batch",
                "messages": [{"role": "user", "content": f"job {i}"}]}

    async def post(path: str, body: dict[str, Any], i: int) -> httpx.Response:
        for retry in range(3):  # a keep-alive connection the server just closed: send again
            try:
                r = await clients[i % len(clients)].post(path, json=body)
                break
            except httpx.TransportError:
                if retry == 2:
                    raise
        r.raise_for_status()
        return r

    async def submit(i: int) -> None:
        async with sem:
            ids.append((await post("/v1/jobs", job(i), i)).json()["id"])

    async def submit_bulk(first: int) -> None:
        async with sem:
            body = {"jobs": [job(i) for i in range(first, min(jobs, first + bulk))]}
            ids.extend(view["id"] for view in (await post("/v1/jobs/batch", body, first)).json()["data"])

    cpu_before = stack.cpu_seconds()
    start = time.perf_counter()
    if bulk:
        await asyncio.gather(*[submit_bulk(i) for i in range(0, jobs, bulk)])
    else:
        await asyncio.gather(*[submit(i) for i in range(jobs)])
    submitted = time.perf_counter() - start
    while True:
        done = _count_in_store(stack.database_url, feature)
        if done >= jobs or time.perf_counter() - start > 600:
            break
        await asyncio.sleep(0.05)
    elapsed = time.perf_counter() - start
    cpu = cpu_ms_per_job(cpu_before, stack.cpu_seconds(), done)
    done = await _count(clients[0], feature)  # the same answer through the API, as a user would see it
    for client in clients:
        await client.aclose()
    return {"jobs": jobs, "bulk": bulk, "done": done, "submit_rate": jobs / submitted, "jobs_per_s": done / elapsed,
            "elapsed_s": elapsed, "cpu_ms": cpu}


def _count_in_store(database_url: str, feature: str) -> int:
    """Finished jobs of the run, read straight from the store so polling costs the api no CPU."""
    from sqlalchemy import func, select

    from shared.db.models import Job
    from shared.db.session import get_engine, session_scope

    query = select(func.count()).where(Job.feature == feature, Job.status == "succeeded")
    with session_scope(get_engine(database_url), readonly=True) as db:
        return int(db.scalar(query) or 0)


async def _count(client: httpx.AsyncClient, feature: str) -> int:
    """Finished jobs of the run, counted by paging the listing (what a user of the API would do)."""
    total, cursor = 0, None
    while True:
        params: dict[str, str | int] = {"feature": feature, "status": "succeeded", "limit": 500,
                                        **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/jobs", params=params)).json()
        total += len(page["data"])
        if not page["has_more"]:
            return total
        cursor = page["next_cursor"]


def add_database_url(parser: argparse.ArgumentParser) -> None:
    """The ``--database-url`` option the benchmarks share (``create_pg_database`` makes it fresh)."""
    parser.add_argument("--database-url", help="result store (default: a temp SQLite file); e.g. "
                        "postgresql://postgres@127.0.0.1:5432/gw_bench (dropped and created)")


def create_pg_database(url: str) -> None:
    """A fresh PostgreSQL database for the run (dropped first if it exists)."""
    import psycopg

    base, _, name = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _cpu_line(cpu: dict[str, float], unit: str) -> str:
    parts = " | ".join(f"{name} {ms:.2f}" for name, ms in cpu.items())
    return f"  CPU ms per {unit}: {parts} | total {sum(cpu.values()):.2f}"


def _report(args: argparse.Namespace, lat: dict[str, Any] | None, thr: list[dict[str, Any]]) -> None:
    print(f"command: {' '.join(sys.argv)}")
    print(f"result store: {'PostgreSQL' if args.database_url else 'SQLite (temp file)'}")
    if lat is not None:
        print(f"added latency, fast lane, {args.rate:.0f} pairs/s for {args.seconds:.0f}s "
              f"({lat['pairs']:.0f} pairs, {lat['errors']:.0f} errors):")
        print(f"  direct p50 {lat['direct_p50']:.2f} ms | gateway p50 {lat['gateway_p50']:.2f} ms")
        print(f"  added p50 {lat['added_p50']:.2f} ms | p90 {lat['added_p90']:.2f} ms | "
              f"p99 {lat['added_p99']:.2f} ms   (targets: p50 <= 5 ms, p99 <= 20 ms)")
        print(_cpu_line(lat["cpu_ms"], "pair (the direct call is the simulator's share)"))
    for t in thr:
        how = f"POST /v1/jobs/batch, {t['bulk']} per request" if t["bulk"] else "POST /v1/jobs, one per request"
        print(f"throughput, {t['jobs']:.0f} async batch jobs ({how}), {args.workers} worker x "
              f"{args.concurrency} threads:")
        print(f"  {t['done']:.0f} succeeded in {t['elapsed_s']:.1f}s = {t['jobs_per_s']:.0f} jobs/s end to "
              f"end (submit rate {t['submit_rate']:.0f}/s; target >= 300 jobs/s)")
        print(_cpu_line(t["cpu_ms"], "job"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="request pairs per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency phase length (0 skips it)")
    parser.add_argument("--jobs", type=int, default=3000, help="throughput phase jobs, one request each (0 skips)")
    parser.add_argument("--bulk-jobs", type=int, default=6000, help="throughput phase jobs sent in bulk (0 skips)")
    parser.add_argument("--bulk-size", type=int, default=500, help="jobs per POST /v1/jobs/batch")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes (one per core)")
    parser.add_argument("--concurrency", type=int, default=32, help="threads per worker")
    add_database_url(parser)
    args = parser.parse_args()
    if args.database_url:
        create_pg_database(args.database_url)
    stack = Stack(args.workers, args.concurrency, args.database_url)
    lat, thr = None, []
    try:
        key = stack.start()
        if args.seconds > 0:
            lat = asyncio.run(added_latency(stack, key, args.rate, args.seconds))
        if args.jobs > 0:
            thr.append(asyncio.run(throughput(stack, key, args.jobs)))
        if args.bulk_jobs > 0:
            thr.append(asyncio.run(throughput(stack, key, args.bulk_jobs, bulk=args.bulk_size)))
    finally:
        stack.stop()
    _report(args, lat, thr)


if __name__ == "__main__":
    main()
