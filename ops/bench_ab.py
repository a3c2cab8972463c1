"""A/B one setting of the api's fast lane in a single run, so the machine's drift cancels out.

    .venv/bin/python ops/bench_ab.py --toggle api.routes.common:RESPONSE_FIRST_S:0.1:0 [--pairs 3000]

The api runs in this process with ``module.attr`` set to A or B for each request (an ``x-ab``
header picks it); the simulator, scheduler and a worker run as in ``bench_gateway``. A client in its
own process sends pairs (direct call, then the same call through the gateway), switching arm every
``--block`` pairs so that what one arm leaves behind (work after the response) lands in its own
arm. Prints p50 / p90 / p99 of the added latency per arm. Only a module attribute read at call
time can be toggled this way; the api runs with one uvicorn worker, requests one at a time.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import os
import subprocess
import sys
import threading
import time
from typing import Any

from cli.main import _tune_gc
from ops.bench_gateway import Stack, free_port

CLIENT = r'''
import statistics, sys, time
import httpx
api, key, sim, pairs, block, rate = sys.argv[1:7]
pairs, block, rate = int(pairs), int(block), float(rate)
gateway = httpx.Client(base_url=f"{api}/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)
direct = httpx.Client(base_url=f"{sim}/v1", headers={"Authorization": "Bearer sim"}, timeout=30)
body = {"model": "gpt-4o-mini", "max_tokens": 16, "messages": [{"role": "user", "content": "How far is the moon?"}]}
for i in range(100):  # warm-up, both arms
    gateway.post("/chat/completions", json=body, headers={"x-ab": "AB"[i % 2]})
added = {"A": [], "B": []}
for i in range(pairs):
    arm = "AB"[(i // block) % 2]
    t0 = time.perf_counter()
    direct.post("/chat/completions", json=body)
    t1 = time.perf_counter()
    r = gateway.post("/chat/completions", json=body, headers={"x-ab": arm})
    t2 = time.perf_counter()
    if r.status_code != 200:
        sys.exit(f"gateway answered {r.status_code}: {r.text}")
    if i % block >= 5:  # the first pairs of a block may still feel the other arm
        added[arm].append(((t2 - t1) - (t1 - t0)) * 1000)
    time.sleep(max(0.0, 1 / rate - (t2 - t0)))
for arm, values in added.items():
    values.sort()
    print(f"  {arm}: added p50 {statistics.median(values):.2f} ms | p90 {values[int(.9 * len(values))]:.2f}"
          f" | p99 {values[int(.99 * len(values))]:.2f}   ({len(values)} pairs)")
'''


def parse_toggle(spec: str) -> tuple[Any, str, dict[str, Any]]:
    module, attr, a, b = spec.split(":")
    return importlib.import_module(module), attr, {"A": ast.literal_eval(a), "B": ast.literal_eval(b)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toggle", required=True, help="module:attr:A:B (A and B as Python literals)")
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--block", type=int, default=100, help="pairs per arm before switching")
    parser.add_argument("--rate", type=float, default=100.0, help="pairs per second at most")
    args = parser.parse_args()

    stack = Stack(workers=1, concurrency=8, with_api=False)
    key = stack.start()
    os.environ.update(stack.env)  # the in-process api reads the same settings as the stack
    module, attr, arms = parse_toggle(args.toggle)
    import uvicorn

    from api.server import uvicorn_options
    from cli.main import api_app
    from shared.config import get_settings

    _tune_gc()  # as `gateway api` does
    app = api_app()

    async def toggled(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            arm = dict(scope["headers"]).get(b"x-ab")
            if arm is not None:
                setattr(module, attr, arms[arm.decode()])
        await app(scope, receive, send)

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(toggled, host="127.0.0.1", port=port, log_level="warning", loop="uvloop",
                                           **uvicorn_options(get_settings())))  # as `gateway api` runs it
    threading.Thread(target=server.run, daemon=True).start()
    try:
        while not server.started:
            time.sleep(0.05)
        print(f"command: ops/bench_ab.py {' '.join(sys.argv[1:])}")
        print(f"A/B of {args.toggle.rsplit(':', 2)[0]}: A = {arms['A']!r}, B = {arms['B']!r}; "
              f"{args.pairs} pairs, arms alternating every {args.block}")
        subprocess.run([sys.executable, "-c", CLIENT, f"http://127.0.0.1:{port}", key, stack.sim_url,
                        str(args.pairs), str(args.block), str(args.rate)], check=True)
    finally:
        server.should_exit = True
        stack.stop()


if __name__ == "__main__":
    main()
