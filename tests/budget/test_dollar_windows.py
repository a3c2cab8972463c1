"""Dollar budgets as window buckets: reserved at worst case, settled to the real cost, never overspent by
more than one call's worst case however many processes race, never charged twice for a call whose
worker died, rebuilt from the SQL store's figure when Redis forgot them."""

from __future__ import annotations

import multiprocessing
import random
import time

import pytest
import redis

from shared.budget import Bucket, BudgetStore
from shared.budget.buckets import Scope, Seed
from shared.keys import Keys
from tests.conftest import REDIS_URL

NOW = float(int(time.time()))  # the seeded buckets expire on Redis's own clock: a day after their window
WINDOW_END = NOW + 3_600  # the window (a day, say) ends in an hour
LIMIT = 1.0  # USD
WORST = 0.05  # each call's worst case


def budget(keys: Keys, cost: float, *, limit: float = LIMIT, enforced: bool = True) -> Bucket:
    scope = Scope("spend", tenant="acme", window="day", window_id="2026-12-01")
    return Bucket(scope.key(keys), limit, 0.0, cost, scope=scope, window_end=WINDOW_END, enforced=enforced)


def seeded(store: BudgetStore, spent: float = 0.0, **kw: float | bool) -> Bucket:
    bucket = budget(store.keys, WORST, **kw)  # type: ignore[arg-type]
    assert store.seed([Seed(bucket, spent)]) == 1
    return bucket


def test_an_unseeded_budget_is_never_taken_as_unspent(store: BudgetStore) -> None:
    bucket = budget(store.keys, WORST)
    refused = store.try_reserve("j1:1", [bucket], ttl_s=600, now=NOW)
    assert not refused.ok and refused.unseeded == (bucket.key,)
    assert store.seed([Seed(bucket, 0.97)]) == 1 and store.seed([Seed(bucket, 0.0)]) == 0  # the first seed wins
    blocked = store.try_reserve("j1:1", [bucket], ttl_s=600, now=NOW)
    assert not blocked.ok and blocked.blocked_by == bucket.key
    assert blocked.wait_s == pytest.approx(3_600) and (blocked.spent, blocked.limit) == (pytest.approx(0.97), 1.0)


def test_reserved_at_worst_case_and_settled_to_the_real_cost(store: BudgetStore) -> None:
    bucket = seeded(store)
    assert store.try_reserve("j1:1", [bucket], ttl_s=600, now=NOW).ok
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - WORST)
    settled = store.settle_call("j1:1", {}, cost_usd=0.012, now=NOW).run()
    assert settled.ok
    [moved] = settled.windows
    assert (moved.key, moved.before, moved.after, moved.cap) == (bucket.key, 0.0, pytest.approx(0.012), LIMIT)
    assert moved.scope == bucket.scope
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - 0.012)
    assert not store.settle("j1:1", {}, cost_usd=0.012, now=NOW)  # a redelivered settle changes nothing
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - 0.012)


def test_a_blocked_budget_fits_again_when_its_window_ends_and_a_call_above_it_never(store: BudgetStore) -> None:
    bucket = seeded(store, spent=0.99)
    blocked = store.try_reserve("j1:1", [bucket], ttl_s=600, now=NOW + 600)
    assert blocked.wait_s == pytest.approx(3_000)
    huge = store.try_reserve("j2:1", [budget(store.keys, 2.0)], ttl_s=600, now=NOW)
    assert huge.never


def test_a_soft_budget_is_charged_but_never_refuses(store: BudgetStore) -> None:
    bucket = seeded(store, spent=5.0, enforced=False)
    assert store.try_reserve("j1:1", [bucket], ttl_s=600, now=NOW).ok
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - 5.0 - WORST)


def test_a_worker_killed_mid_call_does_not_leave_the_budget_charged_twice(store: BudgetStore) -> None:
    """The worker dies: its reservation is never settled. Re-admitted while the reservation lives (recovery
    sends the same attempt again): the same reservation, not a second charge. Once it expires unreported,
    its dollars are given back; the attempt sent again is charged once, and settled once."""
    bucket = seeded(store)
    assert store.try_reserve("job-1:1", [bucket], ttl_s=60, now=NOW).ok
    assert store.try_reserve("job-1:1", [bucket], ttl_s=60, now=NOW + 30).ok  # recovery, same attempt
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - WORST)
    assert store.expire(now=NOW + 61) == 1
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT)
    assert store.try_reserve("job-1:1", [bucket], ttl_s=60, now=NOW + 62).ok
    assert store.settle("job-1:1", {}, cost_usd=0.01, now=NOW + 63)
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - 0.01)


def test_an_expired_reservation_found_by_the_next_admission_is_given_back_too(store: BudgetStore) -> None:
    bucket = seeded(store)
    assert store.try_reserve("job-1:1", [bucket], ttl_s=60, now=NOW).ok
    assert store.try_reserve("job-1:1", [bucket], ttl_s=60, now=NOW + 120).ok  # expired: dropped, made anew
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - WORST)
    assert not store.settle("job-2:1", {}, cost_usd=0.5, now=NOW + 121)  # never reserved: nothing charged
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - WORST)


def test_dollars_and_tokens_are_reserved_together_or_not_at_all(store: BudgetStore) -> None:
    bucket = seeded(store, spent=0.99)
    tokens = Bucket(store.keys.budget_bucket("tpm"), 1_000, 10, 100)
    assert not store.try_reserve("j1:1", [tokens, bucket], ttl_s=600, now=NOW).ok
    assert store.levels([tokens], now=NOW)[tokens.key] == 1_000


def race(prefix: str, worker: int, calls: int) -> list[float]:
    """One process's calls: reserve the worst case, 'call', settle to a real cost at most the worst case.
    Returns the real costs of the calls it was allowed to make."""
    store = BudgetStore(redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(prefix))
    rng = random.Random(worker)
    spent = []
    for i in range(calls):
        worst = rng.uniform(0.01, WORST)
        rid = f"w{worker}-{i}:1"
        if store.try_reserve(rid, [budget(store.keys, worst)], ttl_s=600, now=NOW).ok:
            real = worst * rng.uniform(0.2, 1.0)
            store.settle(rid, {}, cost_usd=real, now=NOW)
            spent.append(real)
    return spent


def test_processes_racing_never_overspend_by_more_than_one_worst_case(store: BudgetStore) -> None:
    bucket = seeded(store)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        results = pool.starmap(race, [(store.keys.prefix, w, 80) for w in range(6)])
    total = sum(cost for spent in results for cost in spent)
    assert total <= LIMIT + WORST
    assert total > LIMIT * 0.8  # the budget was used, not just refused
    assert store.levels([bucket.key], now=NOW)[bucket.key] == pytest.approx(LIMIT - total)
    assert store.reservations() == []
