"""The fast lane's added latency as seen by a load generator that is not the project's own Python client.

    .venv/bin/python ops/bench_openloop.py [--rate 100] [--seconds 20] [--rounds 2] [--database-url ...]

``ops/bench_gateway.py`` measures with the project's asyncio client, pairing each call straight to the
simulator with the same call through the gateway. Here ``ops/openloop.js`` (Node.js, no shared code) sends
requests at a fixed rate, open loop, over keep-alive connections, each prompt unique so no cache answers:
``--seconds`` to the simulator, then as long to the gateway's fast lane, ``--rounds`` times alternating.
It prints each side's percentiles, the gateway's minus the simulator's per percentile (unpaired: two
distributions, as an outside measurer takes them), how late the generator's sends were against their
schedule, and the api's CPU per call from /proc. Needs Node.js (any version since 15). Nothing asserts a
number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from ops.bench_gateway import PAYLOAD, Stack, add_database_url, create_pg_database

GENERATOR = Path(__file__).with_name("openloop.js")
PERCENTILES = ("p50", "p90", "p99")


def fire(url: str, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """One open-loop run; the generator's JSON report."""
    body = {**PAYLOAD, "messages": [{"role": "user", "content": "question [<id>]"}]}
    run = subprocess.run(["node", str(GENERATOR), url, key, str(rate), str(seconds), json.dumps(body)],
                         check=True, capture_output=True, text=True)
    report: dict[str, Any] = json.loads(run.stdout)
    if not report["ok"]:  # no percentiles to print: say what came back instead
        raise SystemExit(f"no request to {url} succeeded: {report['errors']} errors, statuses {report['statuses']}")
    return report


def line(name: str, report: dict[str, Any]) -> str:
    return (f"  {name:<9} {report['ok']:>5} of {report['requests']} ok | "
            + " | ".join(f"{p} {report[p]:6.2f} ms" for p in PERCENTILES)
            + f" | sends late p50 {report['late_p50']:.2f}, p99 {report['late_p99']:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100, help="requests per second, fixed rate")
    parser.add_argument("--seconds", type=float, default=20, help="length of each run")
    parser.add_argument("--rounds", type=int, default=2, help="simulator/gateway pairs of runs, alternating")
    add_database_url(parser)
    args = parser.parse_args()
    if shutil.which("node") is None:
        raise SystemExit("ops/openloop.js needs Node.js (apt-get install nodejs)")

    if args.database_url:
        create_pg_database(args.database_url)
    stack = Stack(workers=1, concurrency=8, database_url=args.database_url)
    key = stack.start()
    gateway_url, direct_url = f"{stack.api_url}/v1/chat/completions", f"{stack.sim_url}/v1/chat/completions"
    try:
        fire(gateway_url, key, args.rate, 3)  # warm-up: connections, caches
        print(f"command: ops/bench_openloop.py {' '.join(sys.argv[1:])}")
        print(f"result store: {'PostgreSQL' if args.database_url else 'SQLite (temp file)'}; load average at start "
              f"{os.getloadavg()[0]:.2f}; {args.rate:g} requests/s for {args.seconds:g} s a side, open loop")
        for round_ in range(1, args.rounds + 1):
            direct = fire(direct_url, "sim", args.rate, args.seconds)
            before = stack.cpu_seconds()
            gateway = fire(gateway_url, key, args.rate, args.seconds)
            api_ms = (stack.cpu_seconds()["api"] - before["api"]) * 1000 / max(1, gateway["requests"])
            added = {p: gateway[p] - direct[p] for p in PERCENTILES}
            print(f"round {round_}:")
            print(line("simulator", direct))
            print(line("gateway", gateway))
            print("  added     " + " | ".join(f"{p} {added[p]:6.2f} ms" for p in PERCENTILES)
                  + f" | api CPU {api_ms:.2f} ms per call   (issue 19: p50 <= 3, p99 <= 10 ms)")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
