"""The interactive reserve lends what the interactive lane does not use, through the real Lua scripts:
other lanes leave what its recent arrivals need (``reserve_window_s`` of its rate plus its largest
recent job), at least ``reserve_min``, at most ``reserve``; an interactive arrival within that never
waits on them.

The account (tests/budget/conftest.py): gpt@oa, 60,000 TPM at headroom 0.9, so the TPM bucket holds
54,000 tokens and refills 900 a second; reserve 0.3 (16,200 at most), reserve_min 0.02 (1,080).
"""

from __future__ import annotations

import redis

from shared.budget import BudgetStore, BudgetTree, Estimate
from shared.keys import Keys
from tests.budget.conftest import make_settings

T0 = 3_000_000.0
COPILOT = Estimate(60, 40)  # 100 tokens, every 0.2 s: 500 tokens/s, 5 requests/s (RPM refills 9/s)
SUMMARY = Estimate(150, 50)  # 200 tokens


def setup(client: redis.Redis, keys: Keys, **interactive: float) -> tuple[BudgetTree, BudgetStore]:
    lanes = {"interactive": {"reserve": 0.3, **interactive}, "batch": {"ceiling": 1.0}}
    tree = BudgetTree(make_settings(lanes=lanes), keys)
    return tree, BudgetStore(client, keys, reserve=tree.reserve_rule())


def reserve(store: BudgetStore, tree: BudgetTree, rid: str, lane: str, est: Estimate, now: float) -> bool:
    buckets = tree.buckets_for(deployment="gpt@oa", lane=lane, tenant="globex", feature=None, estimate=est)
    return store.try_reserve(rid, buckets, ttl_s=600, now=now).ok


def copilot_stream(store: BudgetStore, tree: BudgetTree, seconds: float, every_s: float = 0.2) -> float:
    """Interactive arrivals of 100 tokens every ``every_s`` for ``seconds``; returns the time after."""
    steps = int(seconds / every_s)
    for i in range(steps):
        assert reserve(store, tree, f"c{i}", "interactive", COPILOT, T0 + i * every_s)
    return T0 + steps * every_s


def fill(store: BudgetStore, tree: BudgetTree, prefix: str, lane: str, now: float) -> int:
    n = 0
    while reserve(store, tree, f"{prefix}{n}", lane, SUMMARY, now):
        n += 1
    return n


def tpm_level(store: BudgetStore, keys: Keys, now: float) -> float:
    key = keys.budget_bucket("dep", "gpt@oa", "tpm")
    return store.levels([key], now=now)[key]


def test_batch_leaves_what_the_interactive_lanes_recent_arrivals_need(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    now = copilot_stream(store, tree, 60)  # 500 tokens/s for six of the meter's time constants
    fill(store, tree, "b", "batch", now)
    # 5 s of ~500 tokens/s, plus the largest recent job (100): ~2,600 kept (less than one 200-token job
    # more), not the 16,200 of the reserve
    assert 2_450 < tpm_level(store, keys, now) < 2_800


def test_an_interactive_arrival_within_the_reserve_never_waits_on_batch(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    now = copilot_stream(store, tree, 60)
    assert fill(store, tree, "b", "batch", now) > 200
    assert not reserve(store, tree, "one-more", "batch", SUMMARY, now)
    # Five seconds of the copilot's traffic arriving at the same instant, batch already at its floor
    assert all(reserve(store, tree, f"burst{i}", "interactive", COPILOT, now) for i in range(25))


def test_a_quiet_interactive_lane_keeps_only_the_least_reserve(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    now = copilot_stream(store, tree, 30) + 120  # two minutes without interactive traffic
    fill(store, tree, "b", "batch", now)
    assert 1_080 <= tpm_level(store, keys, now) < 1_280  # 2% of 54,000, and less than one job more


def test_the_reserve_never_keeps_more_than_configured(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys, reserve_window_s=60)  # 60 s of 500 tokens/s would be 30,000
    now = copilot_stream(store, tree, 60)
    fill(store, tree, "b", "batch", now)
    assert 16_200 <= tpm_level(store, keys, now) < 16_400


def test_without_a_reserve_other_lanes_may_take_everything(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys, reserve=0.0)
    now = copilot_stream(store, tree, 10)
    fill(store, tree, "b", "standard", now)
    assert tpm_level(store, keys, now) < 200
