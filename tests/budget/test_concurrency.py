"""Many clients reserving at once never over-admit: the Lua script is the only arbiter."""

from __future__ import annotations

import multiprocessing
import random
from concurrent.futures import ThreadPoolExecutor

import redis

from shared.budget import Bucket, BudgetStore
from shared.keys import Keys
from tests.conftest import REDIS_URL

NOW = 4_000_000.0  # a fixed time: nothing refills while the clients race


def path(keys: Keys, cost: float) -> list[Bucket]:
    return [Bucket(keys.budget_bucket("dep"), 5_000, 100, cost, floor=1_000),
            Bucket(keys.budget_bucket("tenant"), 3_000, 50, cost),
            Bucket(keys.budget_bucket("rpm"), 40, 1, 1)]


def race(prefix: str, worker: int, attempts: int) -> list[float]:
    """One client's reservations; returns the costs it got admitted."""
    keys = Keys(prefix)
    store = BudgetStore(redis.Redis.from_url(REDIS_URL, decode_responses=True), keys)
    rng = random.Random(worker)
    won = []
    for i in range(attempts):
        cost = rng.randint(10, 200)
        if store.try_reserve(f"w{worker}-{i}", path(keys, cost), ttl_s=600, now=NOW).ok:
            won.append(float(cost))
    return won


def check(store: BudgetStore, won: list[float]) -> None:
    assert len(won) <= 40 and sum(won) <= 3_000
    levels = store.levels(path(store.keys, 0), now=NOW)
    assert levels[store.keys.budget_bucket("tenant")] == 3_000 - sum(won)
    assert levels[store.keys.budget_bucket("rpm")] == 40 - len(won)
    assert len(store.reservations()) == len(won)


def test_threads_racing_for_one_path_never_over_admit(store: BudgetStore) -> None:
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda w: race(store.keys.prefix, w, 30), range(16)))
    check(store, [cost for won in results for cost in won])


def test_processes_racing_for_one_path_never_over_admit(store: BudgetStore) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        results = pool.starmap(race, [(store.keys.prefix, w, 60) for w in range(4)])
    check(store, [cost for won in results for cost in won])
