"""A storm to watch: one tenant dumps a batch backlog while another's live feature keeps calling.

    .venv/bin/python ops/storm_demo.py [--url http://127.0.0.1:8000] [--jobs 1500] [--seconds 90]

Against a running gateway (``bash ops/run.sh``): ``acme``'s ``summarizer`` submits ``--jobs`` long batch
jobs through ``POST /v1/jobs/batch`` at once, while ``globex``'s ``copilot`` sends a short interactive
call every half second for ``--seconds``. Keys come from ``var/demo-keys.json`` (written by
``gateway up``) unless ``--acme-key``/``--globex-key`` are given. Watch it in Flower, the console
(``/console``) and Grafana; the script prints the copilot's latencies at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import httpx

PROMPT = "Summarise this contract clause by clause, keeping every amount and date. " * 40  # ~600 tokens
BATCH = 500


def dump_backlog(url: str, key: str, jobs: int) -> None:
    """The overnight summarizer: every job at once, in batches of ``BATCH``."""
    headers = {"Authorization": f"Bearer {key}"}
    sent = 0
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        while sent < jobs:
            n = min(BATCH, jobs - sent)
            batch = [{"model": "gpt-4o-mini", "feature": "summarizer", "priority": "batch", "max_tokens": 100,
                      "messages": [{"role": "user", "content": f"{PROMPT} (document {sent + i})"}]} for i in range(n)]
            r = client.post("/v1/jobs/batch", json={"jobs": batch})
            if r.status_code != 202:
                print(f"backlog: {r.status_code} {r.text[:200]}", file=sys.stderr)
                return
            sent += n
    print(f"acme/summarizer: {sent} batch jobs queued")


def copilot(url: str, key: str, seconds: float, latencies: list[float], failures: list[int]) -> None:
    """The live feature: one short interactive call every 0.5 s, waiting for each answer."""
    headers = {"Authorization": f"Bearer {key}", "X-Gateway-Feature": "copilot"}
    body = {"model": "gpt-4o-mini", "max_tokens": 32, "messages": [{"role": "user", "content": "Complete: def add("}]}
    end = time.monotonic() + seconds
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        while time.monotonic() < end:
            started = time.monotonic()
            r = client.post("/v1/chat/completions", json=body)
            if r.status_code == 200:
                latencies.append(time.monotonic() - started)
            else:
                failures.append(r.status_code)
            time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--jobs", type=int, default=1500, help="acme's batch backlog")
    parser.add_argument("--seconds", type=float, default=90, help="how long globex's copilot keeps calling")
    parser.add_argument("--acme-key")
    parser.add_argument("--globex-key")
    args = parser.parse_args()
    saved = Path("var/demo-keys.json")
    keys = json.loads(saved.read_text()) if saved.exists() else {}
    acme, globex = args.acme_key or keys.get("acme"), args.globex_key or keys.get("globex")
    if not acme or not globex:
        print("no keys: start the gateway with `bash ops/run.sh` (it writes var/demo-keys.json), or pass "
              "--acme-key and --globex-key", file=sys.stderr)
        return 2
    latencies: list[float] = []
    failures: list[int] = []
    live = threading.Thread(target=copilot, args=(args.url, globex, args.seconds, latencies, failures))
    live.start()
    time.sleep(5)  # the copilot alone first, then the storm
    dump_backlog(args.url, acme, args.jobs)
    live.join()
    if latencies:
        cuts = statistics.quantiles(latencies, n=100)
        print(f"globex/copilot: {len(latencies)} calls ok, {len(failures)} failed; "
              f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
