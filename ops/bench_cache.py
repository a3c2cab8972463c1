"""What the cache costs and saves, measured through the real api (one run, one command).

    .venv/bin/python ops/bench_cache.py          # ~2 min

It starts the stack of ``ops/bench_gateway.py`` (zero-latency simulator, worker, scheduler, api, SQLite)
with the test suite's config (tenant acme; its feature ``faq`` has the semantic cache on), then:

1. **exact hits**: one request is answered (and stored), then repeated open loop at ``--rate``/s
   for ``--seconds``, each paired with the same call made directly to the zero-latency simulator
   (as ``ops/bench_gateway.py`` pairs the fast lane): what a hit adds is the per-pair difference.
2. **semantic hits**: each of the labeled set's questions is answered, then its paraphrases are
   asked (feature ``faq``) at ``--rate``/s; the ones served ``semantic`` are timed.
3. **misses**: new questions at ``--rate``/s, alternating between a request the cache looks up (exact
   + semantic, feature ``faq``) and one that skips it (``Cache-Control: no-store``); the difference of
   their medians is what a lookup adds to a miss. At the end the lookup itself is also timed in this
   process (``ResponseCache.lookup`` against the same Redis and the scope the workload filled), which
   a machine shared with other work disturbs less than the HTTP round trips.
4. **a replayed workload**: ``--workload`` requests drawn Zipf-like over ``--distinct`` questions (a
   third of them in other words, as users ask), at ``--rate``/s: hit rate by kind, and dollars paid and saved
   (from ``x-gateway-cost-usd`` / ``x-gateway-saved-usd``).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ops.bench_gateway import Stack, pct  # noqa: E402
from ops.cache_eval.pairs import ITEMS  # noqa: E402

MODEL = "cache"  # priced like gpt-4o-mini in tests/gateway.test.yaml
MAX_TOKENS = 1000  # the simulator's replies (120 tokens median, 1000 at most) end with "stop"


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": MAX_TOKENS, "temperature": 0,
            "messages": [{"role": "user", "content": text}], **extra}


class Client:
    def __init__(self, stack: Stack, key: str) -> None:
        limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
        self.gateway = httpx.AsyncClient(base_url=f"{stack.api_url}/v1", limits=limits, timeout=30,
                                         headers={"Authorization": f"Bearer {key}"})
        self.direct = httpx.AsyncClient(base_url=f"{stack.sim_url}/v1", limits=limits, timeout=30,
                                        headers={"Authorization": "Bearer sim"})
        self.errors = 0

    async def chat(self, body: dict[str, Any], feature: str = "default",
                   **headers: str) -> tuple[float, httpx.Response | None]:
        started = time.perf_counter()
        try:
            reply = await self.gateway.post("/chat/completions", json=body,
                                            headers={"X-Gateway-Feature": feature, **headers})
        except httpx.TransportError:
            self.errors += 1
            return 0.0, None
        if reply.status_code != 200:
            self.errors += 1
            return 0.0, None
        return (time.perf_counter() - started) * 1000, reply

    async def close(self) -> None:
        await self.gateway.aclose()
        await self.direct.aclose()


async def open_loop(rate: float, count: int, one: Callable[[int], Coroutine[Any, Any, None]]) -> None:
    """``one(i)`` for i in range(count), started at ``rate``/s whatever the answers' pace."""
    start, tasks = time.perf_counter(), []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)


def summary(ms: list[float]) -> str:
    if not ms:
        return "no samples"
    return f"p50 {statistics.median(ms):.2f} ms | p90 {pct(ms, 0.9):.2f} | p99 {pct(ms, 0.99):.2f} (n={len(ms)})"


async def stored(client: Client, body: dict[str, Any], feature: str = "default") -> None:
    """Ask until the answer is served from the cache (its attempt stores it just after answering)."""
    for _ in range(500):
        _, reply = await client.chat(body, feature)
        if reply is not None and reply.headers["x-gateway-cache"] in ("hit", "semantic"):
            return
        await asyncio.sleep(0.02)


async def exact_hits(client: Client, rate: float, seconds: float) -> dict[str, Any]:
    """Pairs at ``rate``/s, as ``ops/bench_gateway.py`` times the fast lane: a direct call to the
    zero-latency simulator, then the same question through the gateway, answered from the cache."""
    body = ask(f"What is the speed of light? ({uuid.uuid4().hex[:6]})")
    direct_body = {**body, "model": "gpt-cache"}
    await stored(client, body)
    hits: list[float] = []
    direct: list[float] = []
    added: list[float] = []
    kinds: Counter[str] = Counter()

    async def one(_: int) -> None:
        started = time.perf_counter()
        try:
            await client.direct.post("/chat/completions", json=direct_body)
        except httpx.TransportError:
            client.errors += 1
            return
        direct_ms = (time.perf_counter() - started) * 1000
        ms, reply = await client.chat(body)
        if reply is not None:
            kinds[reply.headers["x-gateway-cache"]] += 1
            if reply.headers["x-gateway-cache"] == "hit":
                hits.append(ms)
                direct.append(direct_ms)
                added.append(ms - direct_ms)

    await open_loop(rate, 50, one)  # warm-up
    for samples in (hits, direct, added):
        samples.clear()
    kinds.clear()
    await open_loop(rate, int(rate * seconds), one)
    return {"hits": hits, "direct": direct, "added": added, "kinds": kinds}


async def semantic_hits(client: Client, rate: float) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    for item in ITEMS:
        await stored(client, ask(f"{item.question} [{run}]"), "faq")
    asks = [ask(f"{same} [{run}]") for item in ITEMS for same in item.same]
    served: list[float] = []
    kinds: Counter[str] = Counter()

    async def one(i: int) -> None:
        ms, reply = await client.chat(asks[i], "faq")
        if reply is not None:
            kinds[reply.headers["x-gateway-cache"]] += 1
            if reply.headers["x-gateway-cache"] == "semantic":
                served.append(ms)

    await open_loop(rate, len(asks), one)
    return {"semantic": served, "kinds": kinds}


async def misses(client: Client, rate: float, seconds: float) -> dict[str, Any]:
    looked, skipped = [], []
    run = uuid.uuid4().hex[:6]

    async def one(i: int) -> None:
        body = ask(f"Tell me fact number {i} about owls [{run}]")
        if i % 2:
            ms, reply = await client.chat(body, "faq")
            if reply is not None and reply.headers["x-gateway-cache"] == "miss":
                looked.append(ms)
        else:
            ms, reply = await client.chat(body, "faq", **{"Cache-Control": "no-store"})
            if reply is not None:
                skipped.append(ms)

    await open_loop(rate, 40, one)  # warm-up
    looked.clear()
    skipped.clear()
    await open_loop(rate, int(rate * seconds), one)
    return {"looked": looked, "skipped": skipped}


async def workload(client: Client, rate: float, count: int, distinct: int, seed: int) -> dict[str, Any]:
    """Zipf-like repeats over ``distinct`` questions; a third of the requests ask in other words (one of
    the set's hand-written paraphrases of the question)."""
    rng = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    questions = [(item.question, item.same) for item in ITEMS]
    pool = [(f"{q} [{run}-{n}]", [f"{s} [{run}-{n}]" for s in same])
            for n in range(distinct // len(questions) + 1) for q, same in questions][:distinct]
    weights = [1 / (rank + 1) for rank in range(len(pool))]
    picks = rng.choices(range(len(pool)), weights, k=count)
    texts = [pool[p][0] if rng.random() < 0.67 or not pool[p][1] else rng.choice(pool[p][1]) for p in picks]
    kinds: Counter[str] = Counter()
    paid = saved = 0.0

    async def one(i: int) -> None:
        nonlocal paid, saved
        _, reply = await client.chat(ask(texts[i]), "faq")
        if reply is not None:
            kinds[reply.headers["x-gateway-cache"]] += 1
            paid += float(reply.headers["x-gateway-cost-usd"])
            saved += float(reply.headers.get("x-gateway-saved-usd", 0))

    await open_loop(rate, count, one)
    return {"kinds": kinds, "paid": paid, "saved": saved, "count": count, "unique": len(set(texts))}


def lookup_in_process(stack: Stack, count: int = 1000) -> dict[str, list[float]]:
    """``ResponseCache.lookup`` timed in this process against the stack's Redis, for questions the
    cache has not seen (feature faq: the exact entry, then the semantic scope the workload filled):
    what a lookup adds to a miss without the HTTP around it, less exposed to a loaded machine."""
    from shared.cache.plan import plan_for
    from shared.cache.store import ResponseCache
    from shared.config import load_settings
    from shared.keys import Keys
    from shared.redis_conn import sync_redis
    from shared.routing import chain_for

    settings = load_settings(stack.tmp / "gateway.yaml")
    cache = ResponseCache(settings, Keys(stack.env["GATEWAY_KEY_PREFIX"]), sync_redis(settings.redis_url),
                          shares_client=True)
    chain = chain_for(settings, MODEL)
    timings: dict[str, list[float]] = {"exact only": [], "exact + semantic": []}
    for i in range(count):
        for kind, feature in (("exact only", "default"), ("exact + semantic", "faq")):
            plan = plan_for(settings, "acme", feature, MODEL, chain, ask(f"How do I tune a violin, take {i}?"))
            started = time.perf_counter()
            found = cache.lookup(plan)
            timings[kind].append((time.perf_counter() - started) * 1000)
            assert found.hit is None
    return timings


async def run(stack: Stack, key: str, args: argparse.Namespace) -> dict[str, Any]:
    client = Client(stack, key)
    try:
        out: dict[str, Any] = {"exact": await exact_hits(client, args.rate, args.seconds),
               "semantic": await semantic_hits(client, args.rate),
               "miss": await misses(client, args.rate, args.seconds),
               "workload": await workload(client, args.rate, args.workload, args.distinct, args.seed)}
    finally:
        await client.close()
    out["errors"] = client.errors
    out["in_process"] = lookup_in_process(stack)
    return out


def report(args: argparse.Namespace, r: dict[str, Any]) -> None:
    print(f"command: {' '.join(sys.argv)}   (errors: {r['errors']})")
    e = r["exact"]
    print(f"1. exact hits, {args.rate:.0f} pairs/s for {args.seconds:.0f}s ({dict(e['kinds'])}):")
    print(f"   a direct call to the zero-latency simulator: {summary(e['direct'])}")
    print(f"   the same question through the gateway, a hit: {summary(e['hits'])}")
    print(f"   added (hit minus direct, per pair): {summary(e['added'])}   target p50 <= 2 ms")
    s = r["semantic"]
    print(f"2. semantic: {sum(s['kinds'].values())} paraphrases of stored questions ({dict(s['kinds'])}):")
    print(f"   gateway time for a semantic hit: {summary(s['semantic'])}")
    m = r["miss"]
    added = statistics.median(m["looked"]) - statistics.median(m["skipped"]) if m["looked"] and m["skipped"] else 0
    print(f"3. misses at {args.rate:.0f} req/s (each a provider call):")
    print(f"   looked up (exact + semantic) and missed: {summary(m['looked'])}")
    print(f"   not looked up (Cache-Control: no-store): {summary(m['skipped'])}")
    print(f"   difference of the medians: {added:.2f} ms")
    for kind, ms in r["in_process"].items():
        print(f"   a lookup that misses, timed in-process ({kind}): {summary(ms)}   target p50 <= 10 ms")
    w = r["workload"]
    kinds = w["kinds"]
    served = kinds["hit"] + kinds["semantic"]
    print(f"4. replayed workload: {w['count']} requests over {w['unique']} distinct texts "
          f"({args.distinct} questions, Zipf-like, a third of requests reworded), {args.rate:.0f} req/s:")
    print(f"   {dict(kinds)}: hit rate {served / max(1, sum(kinds.values())):.1%} "
          f"(exact {kinds['hit']}, semantic {kinds['semantic']})")
    total = w["paid"] + w["saved"]
    print(f"   paid ${w['paid']:.4f}, saved ${w['saved']:.4f} of ${total:.4f} "
          f"({w['saved'] / total if total else 0:.1%})")


def _without_tenant_caps(config: Path) -> None:
    """The suite's tenant acme is capped at 400k tokens a minute: misses at 100/s would queue behind it."""
    data = yaml.safe_load(config.read_text())
    for name in ("soft_tpm", "hard_tpm"):
        data["tenants"]["acme"].pop(name, None)
    config.write_text(yaml.safe_dump(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second in each phase")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the exact-hit and miss phases")
    parser.add_argument("--workload", type=int, default=3000, help="requests in the replayed workload")
    parser.add_argument("--distinct", type=int, default=300, help="distinct questions in it")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    stack = Stack(workers=1, concurrency=32)
    _without_tenant_caps(stack.tmp / "gateway.yaml")
    try:
        key = stack.start()
        result = asyncio.run(run(stack, key, args))
    finally:
        stack.stop()
    report(args, result)


if __name__ == "__main__":
    main()
