"""Throughput of the budget scripts from one Python client: ``python -m tests.budget.bench_reserve``.

Not a test (timings never are): prints reservations and settles per second, sequential, pipelined and
from threads, and Redis commands per admission (from INFO, so round trips are counted by the server).
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis

from shared.budget import BudgetStore, BudgetTree, Estimate
from shared.keys import Keys
from tests.budget.conftest import make_settings
from tests.conftest import REDIS_URL

N = 5_000


CLIENT_COMMANDS = ("evalsha", "eval", "script|exists", "script|load")


def commands(r: redis.Redis) -> tuple[int, int]:
    """(commands sent by clients, all commands run including those inside scripts)."""
    stats = r.info("commandstats")
    sent = sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in CLIENT_COMMANDS)
    return sent, sum(int(v["calls"]) for v in stats.values())


def measure(label: str, r: redis.Redis, n: int, fn) -> None:  # type: ignore[no-untyped-def]
    before, start = commands(r), time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    after = commands(r)
    sent, run = (after[0] - before[0]) / n, (after[1] - before[1] - 1) / n  # minus the INFO call
    print(f"{label:<40} {n / elapsed:>8,.0f}/s   {sent:.2f} commands sent, {run:.1f} run in Redis, each")


def main() -> None:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(f"gwbench{uuid.uuid4().hex[:6]}")
    settings = make_settings(deployments=[
        {"name": "gpt@oa", "provider": "oa", "model": "gpt-4o-mini",
         "limits": {"rpm": 10**9, "tpm": 10**12}}],
        models={"fast": ["gpt@oa"]},
        tenants={"acme": {"soft_tpm": 10**12, "hard_tpm": 10**12,
                          "features": {"summarizer": {"hard_tpm": 10**12}}},
                 "globex": {}})
    tree, store = BudgetTree(settings, keys), BudgetStore(r, keys)
    tenants = [("acme", "summarizer"), ("acme", "chat"), ("globex", "chat")]
    paths = [tree.buckets_for(deployment="gpt@oa", lane="batch", tenant=t, feature=f, estimate=Estimate(1, 1))
             for t, f in tenants]
    print(f"path sizes: {[len(p) for p in paths]} buckets; Redis at {REDIS_URL}")
    store.try_reserve("warm", paths[0], ttl_s=600)
    ids = [f"r{i}" for i in range(N)]
    measure("try_reserve, sequential", r, N,
            lambda: [store.try_reserve(i, paths[n % 3], ttl_s=600) for n, i in enumerate(ids)])
    measure("settle, sequential", r, N, lambda: [store.settle(i, {}) for i in ids])
    batch = 100
    measure(f"try_reserve_many, pipelined x{batch}", r, N, lambda: [
        store.try_reserve_many([(f"p{k}", paths[k % 3]) for k in range(j, j + batch)], ttl_s=600)
        for j in range(0, N, batch)])

    def thread_run(t: int) -> None:
        for k in range(N // 8):
            store.try_reserve(f"t{t}-{k}", paths[k % 3], ttl_s=600)

    def threads() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(thread_run, range(8)))

    measure("try_reserve, 8 threads one process", r, N, threads)
    for key in r.scan_iter(match=f"{{{keys.prefix}}}*"):
        r.delete(key)


if __name__ == "__main__":
    main()
