"""The budget tree's key and dollar levels: a key's own RPM/TPM buckets, and one window bucket per dollar
budget (tenant, feature, key) and window (day, month) in ``billing.timezone``, costing the worst case."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from shared.budget import BudgetStore, BudgetTree, Estimate
from shared.budget.buckets import Seed
from shared.config import DollarBudget
from shared.keys import Keys
from shared.tenancy import KeyPolicy
from tests.budget.conftest import make_settings

NOW = datetime(2026, 12, 1, 22, 30, tzinfo=UTC).timestamp()  # 23:30 in Berlin: the day ends in 30 minutes
KEY = KeyPolicy(key_id=7, tenant="acme", public_id="key_0123456789abcdef", rpm=60, tpm=6_000,
                budget=DollarBudget(daily_usd=1.0))


def budget_tree(keys: Keys) -> BudgetTree:
    settings = make_settings(billing={"timezone": "Europe/Berlin"}, tenants={
        "acme": {"budget": {"daily_usd": 10, "monthly_usd": 200},
                 "features": {"summarizer": {"budget": {"monthly_usd": 50, "enforce": "soft"}}}}})
    return BudgetTree(settings, keys, key_policy=lambda key_id: KEY if key_id == 7 else None)


def test_a_key_has_its_own_rpm_and_tpm_buckets(keys: Keys) -> None:
    tree = budget_tree(keys)
    path = tree.buckets_for(deployment="gpt@oa", lane="standard", tenant="acme", feature=None,
                            estimate=Estimate(100, 50), key_id=7, now=NOW)
    own = {b.scope.axis: b for b in path if b.scope is not None and b.scope.level == "key"}
    assert (own["rpm"].cost, own["rpm"].capacity, own["rpm"].rate) == (1, 60, 1)
    assert (own["tpm"].cost, own["tpm"].capacity) == (150, 6_000)
    costs = tree.settle_costs(deployment="gpt@oa", lane="standard", tenant="acme", feature=None,
                              reserved=Estimate(100, 50), used=Estimate(90, 10), key_id=7)
    assert costs[own["tpm"].key] == 100 and costs[own["rpm"].key] == 1
    assert "key key_0123456789abcdef's own limit (60 RPM)" in tree.describe(own["rpm"], "standard")


def test_one_window_bucket_per_budget_and_window_in_the_billing_timezone(keys: Keys) -> None:
    tree = budget_tree(keys)
    spend = [b for b in tree.buckets_for(deployment="gpt@oa", lane="standard", tenant="acme", feature="summarizer",
                                         estimate=Estimate(100, 50), key_id=7, worst_usd=0.03, now=NOW)
             if b.is_window]
    named = {(b.scope.owner, b.scope.window): b for b in spend if b.scope is not None}
    assert set(named) == {("tenant", "day"), ("tenant", "month"), ("feature", "month"), ("key", "day")}
    day = named[("tenant", "day")]
    assert (day.capacity, day.cost, day.scope.window_id) == (10, 0.03, "2026-12-01")  # type: ignore[union-attr]
    assert day.window_end == datetime(2026, 12, 2, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert named[("tenant", "month")].scope.window_id == "2026-12"  # type: ignore[union-attr]
    assert not named[("feature", "month")].enforced and named[("key", "day")].enforced
    assert tree.describe(day, "standard") == "tenant acme's daily budget ($10.00)"
    assert tree.budget_of(named[("key", "day")].scope) == KEY.budget  # type: ignore[arg-type]


def test_a_call_whose_worst_case_is_above_a_whole_budget_is_too_large(keys: Keys) -> None:
    tree = budget_tree(keys)
    reason = tree.too_large(deployment="gpt@oa", lane="standard", tenant="acme", feature=None,
                            estimate=Estimate(100, 50), key_id=7, worst_usd=1.5)
    assert reason is not None and "more than the whole of key key_0123456789abcdef (tenant acme)'s daily" in reason


def test_no_budget_no_window_bucket(keys: Keys) -> None:
    tree = BudgetTree(make_settings(), keys)
    path = tree.buckets_for(deployment="gpt@oa", lane="standard", tenant="globex", feature=None,
                            estimate=Estimate(100, 50), worst_usd=0.5)
    assert not [b for b in path if b.is_window]


def test_a_raised_budget_counts_at_once(store: BudgetStore, keys: Keys) -> None:
    """The limit is written by every reservation: raising a spent budget lets calls through again."""
    tree, now = budget_tree(keys), time.time()  # seeded buckets expire on Redis's clock, a day after their window
    first = [b for b in tree.buckets_for(deployment="gpt@oa", lane="standard", tenant="acme", feature=None,
                                         estimate=Estimate(10, 10), worst_usd=0.5, now=now) if b.is_window]
    store.seed([Seed(b, 9.8) for b in first])
    assert not store.try_reserve("j:1", first, ttl_s=600, now=now).ok
    raised = [b if b.scope.window != "day" else type(b)(**{**b.__dict__, "capacity": 20.0})  # type: ignore[union-attr]
              for b in first]
    assert store.try_reserve("j:1", raised, ttl_s=600, now=now).ok
    assert store.spent([b.key for b in raised])[raised[0].key] == pytest.approx(10.3)
