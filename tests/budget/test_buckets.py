"""Reservation, refund, expiry and header-sync arithmetic of single buckets, through the Lua scripts."""

from __future__ import annotations

import math

import pytest

from shared.budget import Bucket, BudgetStore
from shared.keys import Keys

T0 = 1_000_000.0


def bucket(keys: Keys, name: str = "b", *, capacity: float = 100, rate: float = 10, cost: float = 10,
           floor: float = 0.0, borrowable: bool = False) -> Bucket:
    return Bucket(keys.budget_bucket(name), capacity, rate, cost, floor, borrowable)


def level(store: BudgetStore, b: Bucket, now: float = T0) -> float:
    return store.levels([b], now=now)[b.key]


def test_a_new_bucket_starts_full_and_a_reservation_debits_it(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=30)
    assert level(store, b) == 100
    assert store.try_reserve("r1", [b], ttl_s=60, now=T0).ok
    assert level(store, b) == 70


def test_a_blocked_reservation_changes_nothing_and_says_which_bucket_and_how_long(
        store: BudgetStore, keys: Keys) -> None:
    roomy, tight = bucket(keys, "roomy", cost=50), bucket(keys, "tight", capacity=60, rate=4, cost=50)
    assert store.try_reserve("r1", [roomy, tight], ttl_s=60, now=T0).ok
    admission = store.try_reserve("r2", [roomy, tight], ttl_s=60, now=T0)
    assert not admission.ok
    assert admission.blocked_by == tight.key
    assert admission.wait_s == pytest.approx((50 - 10) / 4)
    assert store.levels([roomy, tight], now=T0) == {roomy.key: 50, tight.key: 10}
    assert [r.id for r in store.reservations()] == ["r1"]


def test_the_wait_is_that_of_the_bucket_that_frees_last(store: BudgetStore, keys: Keys) -> None:
    fast, slow = bucket(keys, "fast", rate=100, cost=100), bucket(keys, "slow", rate=1, cost=100)
    store.try_reserve("r1", [fast, slow], ttl_s=60, now=T0)
    admission = store.try_reserve("r2", [fast, slow], ttl_s=60, now=T0)
    assert (admission.blocked_by, admission.wait_s) == (slow.key, pytest.approx(100.0))


def test_refill_is_continuous_and_capped(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=100)
    store.try_reserve("r1", [b], ttl_s=600, now=T0)
    assert level(store, b, T0 + 2.5) == pytest.approx(25)
    assert not store.try_reserve("r2", [b], ttl_s=600, now=T0 + 9.9).ok
    assert store.try_reserve("r3", [b], ttl_s=600, now=T0 + 10).ok
    assert level(store, b, T0 + 1000) == 100


def test_a_job_bigger_than_the_bucket_waits_forever(store: BudgetStore, keys: Keys) -> None:
    admission = store.try_reserve("big", [bucket(keys, cost=101)], ttl_s=60, now=T0)
    assert not admission.ok and admission.never and math.isinf(admission.wait_s)
    above_floor = store.try_reserve("big", [bucket(keys, cost=80, floor=30)], ttl_s=60, now=T0)
    assert above_floor.never
    frozen = bucket(keys, "frozen", rate=0, cost=60)
    store.try_reserve("r1", [frozen], ttl_s=60, now=T0)
    assert store.try_reserve("r2", [frozen], ttl_s=60, now=T0).never


def test_settle_refunds_the_difference_at_once(store: BudgetStore, keys: Keys) -> None:
    a, b = bucket(keys, "a", cost=40), bucket(keys, "b", cost=40)
    store.try_reserve("r1", [a, b], ttl_s=60, now=T0)
    assert store.settle("r1", {a.key: 15, b.key: 55}, now=T0)
    assert store.levels([a, b], now=T0) == {a.key: 85, b.key: 45}
    assert store.reservations() == []


def test_settle_refunds_buckets_it_does_not_name_and_caps_at_capacity(store: BudgetStore, keys: Keys) -> None:
    a, b = bucket(keys, "a", cost=40), bucket(keys, "b", cost=40)
    store.try_reserve("r1", [a, b], ttl_s=60, now=T0)
    assert store.settle("r1", {a.key: 40}, now=T0 + 3)
    assert store.levels([a, b], now=T0 + 3) == {a.key: 90, b.key: 100}


def test_settle_is_idempotent(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=50)
    store.try_reserve("r1", [b], ttl_s=60, now=T0)
    assert store.settle("r1", {b.key: 10}, now=T0)
    assert not store.settle("r1", {b.key: 10}, now=T0)
    assert not store.release("r1", now=T0)
    assert level(store, b) == 90
    assert not store.settle("never-reserved", {b.key: 0}, now=T0)


def test_release_refunds_in_full_once(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=50)
    store.try_reserve("r1", [b], ttl_s=60, now=T0)
    store.try_reserve("r2", [b], ttl_s=60, now=T0)
    assert store.release("r1", now=T0)
    assert not store.release("r1", now=T0)
    assert level(store, b) == 50


def test_reserving_the_same_id_twice_charges_once(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=30)
    assert store.try_reserve("job-1:1", [b], ttl_s=60, now=T0).ok
    assert store.try_reserve("job-1:1", [b], ttl_s=60, now=T0).ok
    assert level(store, b) == 70


def test_an_id_whose_reservation_expired_is_charged_afresh(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, rate=0, cost=30)
    store.try_reserve("job-1:1", [b], ttl_s=5, now=T0)
    assert store.try_reserve("job-1:1", [b], ttl_s=5, now=T0 + 6).ok
    assert level(store, b, T0 + 6) == 40
    assert store.release("job-1:1", now=T0 + 6)
    assert level(store, b, T0 + 6) == 70


def test_expired_reservations_are_dropped_without_refund(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, rate=0, cost=30)
    store.try_reserve("short", [b], ttl_s=5, now=T0)
    store.try_reserve("long", [b], ttl_s=50, now=T0)
    assert store.expire(now=T0 + 10) == 1
    assert [r.id for r in store.reservations()] == ["long"]
    assert not store.settle("short", {}, now=T0 + 10)
    assert level(store, b, T0 + 10) == 40
    assert store.expire(now=T0 + 10) == 0


def test_a_late_settle_is_a_no_op_even_before_expire_runs(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, rate=0, cost=30)
    store.try_reserve("r1", [b], ttl_s=5, now=T0)
    assert not store.settle("r1", {b.key: 0}, now=T0 + 6)
    assert level(store, b, T0 + 6) == 70
    assert store.reservations() == []


def test_new_reservations_sweep_expired_ones(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=1)
    for i in range(5):
        store.try_reserve(f"old{i}", [b], ttl_s=1, now=T0)
    store.try_reserve("new", [b], ttl_s=60, now=T0 + 2)
    assert [r.id for r in store.reservations()] == ["new"]


def test_pull_down_lowers_the_level_and_never_raises_it(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, cost=40)
    assert store.pull_down(b.key, 30, 100, 10, now=T0) == 30
    assert store.pull_down(b.key, 90, 100, 10, now=T0) == 30
    assert level(store, b, T0 + 2) == 50
    assert store.try_reserve("r1", [b], ttl_s=60, now=T0 + 2).ok
    assert store.pull_down(b.key, 100, 100, 10, now=T0 + 2) == 10
    assert store.pull_down(b.key, -500, 100, 10, now=T0 + 2) == -100


def test_pull_down_of_a_new_bucket_starts_from_full(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys)
    assert store.pull_down(b.key, 1_000, 100, 10, now=T0) == 100
    assert store.pull_down_many([], now=T0) == {}


def test_a_borrowable_bucket_lends_only_when_asked_and_down_to_minus_capacity(
        store: BudgetStore, keys: Keys) -> None:
    soft = bucket(keys, "soft", rate=0, cost=80, borrowable=True)
    assert store.try_reserve("r1", [soft], ttl_s=60, now=T0).ok
    blocked = store.try_reserve("r2", [soft], ttl_s=60, now=T0)
    assert not blocked.ok and blocked.blocked_by == soft.key
    for i in range(3):
        assert store.try_reserve(f"b{i}", [soft], ttl_s=60, allow_borrow=True, now=T0).ok
    assert level(store, soft) == -100


def test_borrowing_never_bypasses_a_hard_bucket(store: BudgetStore, keys: Keys) -> None:
    soft = bucket(keys, "soft", rate=0, cost=60, borrowable=True)
    hard = bucket(keys, "hard", rate=0, capacity=100, cost=60)
    assert store.try_reserve("r1", [soft, hard], ttl_s=60, allow_borrow=True, now=T0).ok
    admission = store.try_reserve("r2", [soft, hard], ttl_s=60, allow_borrow=True, now=T0)
    assert admission.blocked_by == hard.key and admission.never


def test_levels_do_not_change_state(store: BudgetStore, keys: Keys, client: object) -> None:
    b = bucket(keys, cost=50)
    store.try_reserve("r1", [b], ttl_s=60, now=T0)
    before = client.hgetall(b.key)  # type: ignore[attr-defined]
    assert level(store, b, T0 + 3) == 80
    assert client.hgetall(b.key) == before  # type: ignore[attr-defined]
    unused = bucket(keys, "unused")
    assert store.levels([unused.key], now=T0) == {}
    assert store.levels([unused], now=T0) == {unused.key: 100}


def test_reservations_say_what_is_held_where(store: BudgetStore, keys: Keys) -> None:
    a, b = bucket(keys, "a", cost=10), bucket(keys, "b", cost=5)
    store.try_reserve("r1", [a, b], ttl_s=60, now=T0)
    store.try_reserve("r2", [a], ttl_s=30, now=T0)
    assert [(r.id, r.expires_at) for r in store.reservations()] == [("r2", T0 + 30), ("r1", T0 + 60)]
    assert store.reservations()[1].charges == {a.key: 10, b.key: 5}
    assert store.reserved_totals() == {a.key: (2, 20.0), b.key: (1, 5.0)}


def test_the_redis_clock_is_used_when_no_time_is_given(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, rate=0.001, cost=60)
    assert store.try_reserve("r1", [b], ttl_s=60).ok
    admission = store.try_reserve("r2", [b], ttl_s=60)
    assert not admission.ok and 19_000 < admission.wait_s <= 20_000
    assert store.release("r1")
    assert store.levels([b])[b.key] == pytest.approx(100)


def test_a_pipeline_of_reservations_decides_each_on_its_own(store: BudgetStore, keys: Keys) -> None:
    b = bucket(keys, rate=0, cost=40)
    answers = store.try_reserve_many([(f"r{i}", [b]) for i in range(3)], ttl_s=60, now=T0)
    assert [a.ok for a in answers] == [True, True, False]


def test_a_path_may_not_name_a_bucket_twice(store: BudgetStore, keys: Keys) -> None:
    with pytest.raises(ValueError, match="twice"):
        store.try_reserve("r1", [bucket(keys), bucket(keys)], ttl_s=60, now=T0)
