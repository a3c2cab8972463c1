"""Routing against always using the top tier: cost per 1,000 requests, valid answers, latency, decision time.

    .venv/bin/python ops/bench_routing.py [--requests 3000] [--concurrency 48] [--out ops/results/routing.json]

One run, everything on this machine (``ops/routing/setup.py`` has the models, prices, latencies and
failure profiles; ``ops/routing/workload.py`` the labelled workload):

1. The routing decision alone, in this process: ``Router.route`` (capability filter, allow-lists, tiers,
   cost order, the complexity scorer) over every request of the workload, three times: CPU time per call
   (the decision's own cost) and wall clock (which on a shared machine also counts preemption); p50 / p99.
   Also the scorer's starting tier against each request's difficulty label, for the requests that name
   no task (a confusion matrix).
2. The same workload through a real stack (simulator, worker, scheduler, api), twice, in alternating blocks
   of 200 requests so that the machine's load hits both alike: ``model: large`` (the top tier, always), and
   ``model: auto`` (half of them with ``X-Gateway-Task``). Sync ``POST /v1/chat/completions``,
   ``--concurrency`` at a time. An answer is valid when it is a 200 that passes every check of the cascade
   (``shared.answer_checks``: not cut, JSON the schema accepts, no refusal, not empty). Cost is the job's
   (``x-gateway-cost-usd``: every attempt, escalated ones included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

from ops.bench_gateway import ROOT, Stack, pct
from ops.routing import setup
from ops.routing.workload import Item, build
from shared.answer_checks import failed_check
from shared.budget import prompt_tokens
from shared.config import CHECKS, load_settings
from shared.lanes import Lane
from shared.routing import Router

BLOCK = 200


class RoutingStack(Stack):
    def __init__(self) -> None:
        super().__init__(workers=1, concurrency=64)
        (self.tmp / "gateway.yaml").write_text(setup.gateway_yaml(self.sim_port))
        (self.tmp / "sim.yaml").write_text(setup.sim_yaml())

    def sim_args(self) -> list[str]:
        return ["--config", str(self.tmp / "sim.yaml")]


def decision_times(items: list[Item], config: Path) -> dict[str, Any]:
    """µs per ``Router.route`` over the workload (three passes), and the scorer's tier against the labels."""
    router = Router(load_settings(config))
    counted = [prompt_tokens(item.body) for item in items]
    cpu: list[float] = []
    wall: list[float] = []
    confusion: Counter[tuple[str, str]] = Counter()
    for round_ in range(3):
        for item, tokens in zip(items, counted, strict=True):
            task = item.task if item.names_task else None
            started, started_cpu = time.perf_counter_ns(), time.thread_time_ns()
            _, route = router.route(tenant="acme", feature="default", lane=Lane.INTERACTIVE, model="auto",
                                    request=item.body, prompt_tokens=tokens, task=task)
            cpu.append((time.thread_time_ns() - started_cpu) / 1000)
            wall.append((time.perf_counter_ns() - started) / 1000)
            if round_ == 0 and task is None and route is not None:
                confusion[(item.difficulty, route.tiers[0][0])] += 1
    return {"cpu_p50_us": round(pct(cpu, 0.5), 1), "cpu_p99_us": round(pct(cpu, 0.99), 1),
            "cpu_max_us": round(max(cpu), 1), "wall_p50_us": round(pct(wall, 0.5), 1),
            "wall_p99_us": round(pct(wall, 0.99), 1), "calls": len(cpu), "load_average": os.getloadavg()[0],
            "scorer": {f"{label}->{tier}": n for (label, tier), n in sorted(confusion.items())}}


async def _one(client: httpx.AsyncClient, item: Item, model: str, gate: asyncio.Semaphore) -> dict[str, Any]:
    body = {**item.body, "model": model}
    async with gate:
        started = time.perf_counter()
        try:
            r = await client.post("/v1/chat/completions", json=body, headers=item.headers())
        except httpx.HTTPError as exc:
            return {"ok": False, "valid": False, "error": type(exc).__name__, "ms": 0.0, "cost": 0.0}
        ms = (time.perf_counter() - started) * 1000
    answer = r.json() if r.status_code == 200 else {}
    valid = r.status_code == 200 and failed_check(body, answer, CHECKS) is None
    route = r.headers.get("x-gateway-route", "")
    return {"ok": r.status_code == 200, "status": r.status_code, "valid": valid, "ms": ms,
            "cost": float(r.headers.get("x-gateway-cost-usd", 0) or 0), "task": item.task,
            "difficulty": item.difficulty, "deployment": r.headers.get("x-gateway-deployment", ""),
            "escalations": int(route.split("escalations=")[1].split(";")[0]) if "escalations=" in route else 0}


async def run_arms(url: str, key: str, items: list[Item], concurrency: int) -> dict[str, list[dict[str, Any]]]:
    """Both arms over ``items``, block by block, alternating which goes first."""
    results: dict[str, list[dict[str, Any]]] = {"top": [], "routed": []}
    gate = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=120,
                                 limits=limits) as client:
        for i in range(0, len(items), BLOCK):
            block = items[i:i + BLOCK]
            order = [("top", setup.TOP), ("routed", "auto")]
            for arm, model in order if (i // BLOCK) % 2 == 0 else order[::-1]:
                results[arm] += await asyncio.gather(*(_one(client, item, model, gate) for item in block))
            print(f"  {min(i + BLOCK, len(items))}/{len(items)} requests per arm", flush=True)
    return results


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in rows if r["ok"]]
    latencies = [r["ms"] for r in ok]
    per_task: dict[str, dict[str, Any]] = {}
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in ok:
        by_task[r["task"]].append(r)
    for task, task_rows in sorted(by_task.items()):
        per_task[task] = {"requests": len(task_rows),
                          "cost_per_1k_usd": round(1000 * sum(r["cost"] for r in task_rows) / len(task_rows), 4),
                          "escalation_rate": round(sum(1 for r in task_rows if r["escalations"]) / len(task_rows), 3)}
    return {
        "requests": len(rows), "http_ok": len(ok), "valid": sum(1 for r in rows if r["valid"]),
        "valid_rate": round(sum(1 for r in rows if r["valid"]) / len(rows), 4),
        "cost_usd": round(sum(r["cost"] for r in rows), 6),
        "cost_per_1k_usd": round(1000 * sum(r["cost"] for r in rows) / len(rows), 4),
        "p50_ms": round(pct(latencies, 0.5), 1), "p90_ms": round(pct(latencies, 0.9), 1),
        "p99_ms": round(pct(latencies, 0.99), 1), "mean_ms": round(statistics.fmean(latencies), 1),
        "escalated_requests": sum(1 for r in ok if r["escalations"]),
        "served_by": dict(Counter(r["deployment"] for r in ok)), "per_task": per_task,
    }


def report(result: dict[str, Any]) -> None:
    top, routed, decision = result["top"], result["routed"], result["decision"]
    print(f"\nrouting decision (Router.route, {decision['calls']} calls): CPU time p50 {decision['cpu_p50_us']} µs, "
          f"p99 {decision['cpu_p99_us']} µs, max {decision['cpu_max_us']} µs; wall clock p50 "
          f"{decision['wall_p50_us']} µs, p99 {decision['wall_p99_us']} µs (load average "
          f"{decision['load_average']:.1f} on 2 cores: the wall clock counts time the process was not running)")
    print(f"scorer's starting tier by label (requests without a task): {decision['scorer']}")
    print(f"\n{'':28}{'always top tier':>18}{'routed':>18}")
    for name, key, fmt in (("requests", "requests", "{}"), ("valid answers", "valid_rate", "{:.2%}"),
                           ("cost per 1,000 requests $", "cost_per_1k_usd", "{:.4f}"),
                           ("latency p50 ms", "p50_ms", "{}"), ("latency p90 ms", "p90_ms", "{}"),
                           ("latency p99 ms", "p99_ms", "{}"), ("requests escalated", "escalated_requests", "{}")):
        print(f"{name:28}{fmt.format(top[key]):>18}{fmt.format(routed[key]):>18}")
    print(f"\nrouted: {1 - routed['cost_per_1k_usd'] / top['cost_per_1k_usd']:.1%} cheaper; valid "
          f"{(routed['valid_rate'] - top['valid_rate']) * 100:+.2f} points; p50 "
          f"{routed['p50_ms'] / top['p50_ms']:.2f}x; served by {routed['served_by']}")
    for task, row in routed["per_task"].items():
        top_cost = top["per_task"][task]["cost_per_1k_usd"]
        print(f"  {task:10} cost/1k ${row['cost_per_1k_usd']:.4f} (top ${top_cost:.4f}), escalation rate "
              f"{row['escalation_rate']:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--out", default=str(ROOT / "ops" / "results" / "routing.json"))
    args = parser.parse_args()
    items = build(args.requests)
    stack = RoutingStack()
    print(f"workload: {len(items)} requests, {dict(Counter(i.task for i in items))}, "
          f"{dict(Counter(i.difficulty for i in items))}; logs in {stack.tmp}", flush=True)
    decision = decision_times(items, stack.tmp / "gateway.yaml")
    key = stack.start()
    try:
        started = time.monotonic()
        arms = asyncio.run(run_arms(stack.api_url, key, items, args.concurrency))
        elapsed = time.monotonic() - started
    finally:
        stack.stop()
    result = {"decision": decision, "top": summary(arms["top"]), "routed": summary(arms["routed"]),
              "elapsed_s": round(elapsed, 1), "concurrency": args.concurrency,
              "failures": Counter(str(r.get("status", r.get("error"))) for arm in arms.values() for r in arm
                                  if not r["ok"])}
    report(result)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out} ({elapsed:.0f} s of traffic)")


if __name__ == "__main__":
    main()
