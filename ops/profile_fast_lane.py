"""Where the api's CPU goes on a fast-lane call, by component (issue 19: "report CPU per call by component").

    .venv/bin/python ops/profile_fast_lane.py [--calls 1000] [--rate 30]

Runs the api in this process (one uvicorn server on uvloop, as ``gateway api`` does) beside the
simulator, scheduler and a worker of ``ops.bench_gateway.Stack``; a client in its own process sends
``--calls`` fast-lane calls at ``--rate`` per second, open loop (``ops.bench_ab``'s client). It prints:

- the api process's CPU per call, split between the event-loop thread (HTTP, routing, the body's
  validation, the response) and the threads that run submits (``Acceptor.submit``: admission, the
  store, the provider call, settlement), from /proc;
- inside a submit, the thread CPU (``time.thread_time``) of its main steps, per call, outermost call
  of each only. Steps nest (``_record`` holds ``record_attempt``): the indented ones are part of the
  line above them.

Timers cost ~1 us per wrapped call, so the parts add up to a little more than an unwrapped run. One
run; nothing asserts a number.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.bench_ab import CLIENT
from ops.bench_gateway import Stack, add_database_url, create_pg_database, free_port

# (module, attribute path, depth in the printout): the steps of a fast-lane submit, in the order they run.
STEPS = [
    ("api.accept", "Acceptor.submit", 0),
    ("api.gateway", "Gateway.envelope", 1),
    ("api.gateway", "Gateway.guard", 2),
    ("shared.cache.plan", "plan_for", 1),
    ("api.accept", "Acceptor._read_ahead", 1),
    ("api.accept", "Acceptor._admit_inline", 1),
    ("api.accept", "Acceptor._persist", 1),
    ("shared.db.jobs", "insert_job", 2),
    ("api.accept", "Acceptor._send_here", 1),
    ("execution.attempt", "_call", 2),
    ("execution.attempt", "_record", 2),
    ("shared.db.jobs", "record_attempt", 3),
    ("execution.attempt", "_audited", 3),
    ("shared.redis_batch", "RedisBatch.execute", 1),  # inside _read_ahead and _send_here: shown apart
]


class Timers:
    """Thread CPU per step, counted only for a step's outermost call on its thread."""

    def __init__(self, clock: Callable[[], float] = time.thread_time) -> None:
        self.clock = clock
        self.cpu: dict[str, float] = collections.defaultdict(float)
        self.calls: collections.Counter[str] = collections.Counter()
        self.on = False
        self._inside = threading.local()

    def wrap(self, module: str, path: str) -> None:
        owner: Any = importlib.import_module(module)
        *parents, name = path.split(".")
        for parent in parents:
            owner = getattr(owner, parent)
        original: Callable[..., Any] = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            inside = getattr(self._inside, path, False)
            if not self.on or inside:
                return original(*args, **kwargs)
            setattr(self._inside, path, True)
            started = self.clock()
            try:
                return original(*args, **kwargs)
            finally:
                self.cpu[path] += self.clock() - started
                self.calls[path] += 1
                setattr(self._inside, path, False)

        setattr(owner, name, timed)


def thread_cpu_s(tid: int) -> float:
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_cpu_s() -> float:
    usage = os.times()
    return usage.user + usage.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=30.0, help="calls per second, open loop")
    parser.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                        help="time the steps by the thread's CPU (default) or by the wall clock (waits included)")
    add_database_url(parser)
    args = parser.parse_args()

    if args.database_url:
        create_pg_database(args.database_url)
    stack = Stack(workers=1, concurrency=8, database_url=args.database_url, with_api=False)
    key = stack.start()
    os.environ.update(stack.env)  # the in-process api reads the same settings as the stack
    import uvicorn

    from cli.main import _tune_gc, api_app

    timers = Timers(time.thread_time if args.clock == "cpu" else time.perf_counter)
    for module, path, _ in STEPS:
        timers.wrap(module, path)
    _tune_gc()
    app = api_app()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop"))
    loop_thread: dict[str, int] = {}

    def serve() -> None:
        loop_thread["tid"] = threading.get_native_id()
        server.run()

    threading.Thread(target=serve, daemon=True).start()
    client = [sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}", key, stack.sim_url]
    try:
        while not server.started:
            time.sleep(0.05)
        subprocess.run([*client, "200", "100", str(args.rate)], check=True, capture_output=True)  # warm-up
        timers.on = True
        loop_before, total_before = thread_cpu_s(loop_thread["tid"]), process_cpu_s()
        run = subprocess.run([*client, str(args.calls), "100", str(args.rate)], check=True, capture_output=True,
                             text=True)
        loop_s, total_s = thread_cpu_s(loop_thread["tid"]) - loop_before, process_cpu_s() - total_before
        timers.on = False
    finally:
        server.should_exit = True
        stack.stop()
    calls = timers.calls["Acceptor.submit"] or 1
    print(f"command: ops/profile_fast_lane.py {' '.join(sys.argv[1:])}")
    print(f"load average {os.getloadavg()[0]:.2f}; {calls} fast-lane calls at {args.rate:g}/s (100 of them warm-up);"
          " the client's view (its arms A and B are the same api here):")
    print(run.stdout.rstrip())
    print(f"api CPU per call: {total_s / calls * 1000:.2f} ms = event-loop thread {loop_s / calls * 1000:.2f}"
          f" + other threads {(total_s - loop_s) / calls * 1000:.2f} (submits, group commit, the stream hub)")
    print(f"result store: {'PostgreSQL' if args.database_url else 'SQLite (temp file)'}")
    what = "thread CPU" if args.clock == "cpu" else "wall-clock time (waits included)"
    print(f"inside a submit, {what} per call (indented: part of the line above):")
    for _, path, depth in STEPS:
        if timers.calls[path]:
            per_call, times = timers.cpu[path] / calls * 1000, timers.calls[path] / calls
            print(f"  {'  ' * depth}{path:<{34 - 2 * depth}} {per_call:6.3f} ms  ({times:.1f} per call)")


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
