"""The budget tree through the real store: the interactive reserve, lane ceilings, tenant and feature
limits, the largest job that can ever fit, what settle charges, and header sync."""

from __future__ import annotations

import math

import pytest

from shared.budget import BudgetStore, BudgetTree, Estimate
from shared.keys import Keys
from tests.budget.conftest import fresh_keys, make_settings

T0 = 2_000_000.0
SMALL = Estimate(100, 50)


def path(tree: BudgetTree, *, deployment: str = "gpt@oa", lane: str = "standard", tenant: str = "globex",
         feature: str | None = None, estimate: Estimate = SMALL) -> list:
    return tree.buckets_for(deployment=deployment, lane=lane, tenant=tenant, feature=feature,
                            estimate=estimate)


def fill_until_blocked(store: BudgetStore, tree: BudgetTree, prefix: str, **kw: object) -> int:
    """Reserve the same job until the path blocks; returns how many were admitted."""
    n = 0
    while store.try_reserve(f"{prefix}{n}", path(tree, **kw), ttl_s=600, now=T0).ok:  # type: ignore[arg-type]
        n += 1
    return n


def test_an_openai_deployment_mirrors_rpm_and_tpm_with_headroom(tree: BudgetTree, keys: Keys) -> None:
    rpm, tpm = path(tree, lane="interactive")
    assert rpm.key == keys.budget_bucket("dep", "gpt@oa", "rpm")
    assert (rpm.cost, rpm.capacity, rpm.rate) == (1, 540, 9)
    assert (tpm.cost, tpm.capacity, tpm.rate) == (150, pytest.approx(54_000), pytest.approx(900))
    assert rpm.floor == tpm.floor == 0


def test_an_anthropic_deployment_charges_input_and_output_separately(tree: BudgetTree) -> None:
    costs = {b.key.rsplit(":", 1)[1]: b.cost for b in path(tree, deployment="claude@an", lane="interactive")}
    assert costs == {"rpm": 1, "itpm": 100, "otpm": 50}


def test_lanes_other_than_interactive_leave_the_reserve(tree: BudgetTree) -> None:
    for b in path(tree, lane="standard"):
        assert b.floor == pytest.approx(0.3 * b.capacity)


def test_only_a_lane_with_a_ceiling_gets_its_own_bucket(tree: BudgetTree, keys: Keys) -> None:
    batch = {b.key: b for b in path(tree, lane="batch", deployment="claude@an")}
    lane_keys = [k for k in batch if ":lane:" in k]
    assert lane_keys == [keys.budget_bucket("lane", "batch", "claude@an", axis) for axis in ("itpm", "otpm")]
    assert batch[lane_keys[0]].capacity == pytest.approx(0.6 * 6_000)
    assert not [b for b in path(tree, lane="standard") if ":lane:" in b.key]


def test_other_lanes_leave_the_least_reserve_of_a_quiet_interactive_lane_and_interactive_takes_it(
        store: BudgetStore, tree: BudgetTree) -> None:
    """No interactive traffic yet: the reserve keeps only its least (2% of the bucket), the rest is lent."""
    job = Estimate(500, 500)
    standard = fill_until_blocked(store, tree, "s", lane="standard", estimate=job)
    assert standard == math.floor(0.98 * 54_000 / 1000)
    blocked = store.try_reserve("one-more", path(tree, lane="standard", estimate=job), ttl_s=60, now=T0)
    assert not blocked.ok and not blocked.never
    interactive = fill_until_blocked(store, tree, "i", lane="interactive", estimate=job)
    assert standard + interactive == 54


def test_the_batch_ceiling_holds_even_with_the_deployment_idle(store: BudgetStore, tree: BudgetTree) -> None:
    job = Estimate(500, 500)
    assert fill_until_blocked(store, tree, "b", lane="batch", estimate=job) == 32  # 0.6 x 54k
    assert fill_until_blocked(store, tree, "s", lane="standard", estimate=job) == 52 - 32


def test_a_tenant_hard_limit_holds_across_deployments(store: BudgetStore, tree: BudgetTree) -> None:
    job = Estimate(1_000, 0)
    admitted = 0
    for i in range(40):
        deployment = ("gpt@oa", "claude@an")[i % 2]
        buckets = path(tree, deployment=deployment, lane="interactive", tenant="acme", estimate=job)
        admitted += store.try_reserve(f"r{i}", buckets, ttl_s=60, allow_borrow=True, now=T0).ok
    assert admitted == 12  # hard_tpm 12k: one minute's worth, whatever the deployment


def test_a_soft_limit_blocks_until_borrowing_is_allowed(store: BudgetStore, tree: BudgetTree) -> None:
    job = Estimate(1_000, 0)
    assert fill_until_blocked(store, tree, "s", lane="interactive", tenant="acme", estimate=job) == 6
    more = [store.try_reserve(f"b{i}", path(tree, lane="interactive", tenant="acme", estimate=job),
                              ttl_s=60, allow_borrow=True, now=T0).ok for i in range(10)]
    assert sum(more) == 6  # up to the hard limit


def test_a_feature_cap_limits_only_that_feature(store: BudgetStore, tree: BudgetTree) -> None:
    job = Estimate(1_000, 0)
    assert fill_until_blocked(store, tree, "f", lane="interactive", tenant="acme", feature="summarizer",
                              estimate=job) == 3
    assert store.try_reserve("other", path(tree, lane="interactive", tenant="acme", feature="chat",
                                           estimate=job), ttl_s=60, now=T0).ok


def test_tenants_and_features_without_limits_get_no_bucket(tree: BudgetTree) -> None:
    assert len(path(tree, tenant="globex", feature="anything")) == 2
    assert len(path(tree, tenant="unknown-tenant")) == 2


def test_the_largest_fit_is_the_tightest_capacity_above_the_floor(tree: BudgetTree) -> None:
    fit = tree.largest_fit(deployment="claude@an", lane="batch")
    assert (fit.input_tokens, fit.output_tokens, fit.total_tokens) == (
        pytest.approx(3_600), pytest.approx(720), math.inf)
    assert fit.requests == pytest.approx(42)
    with_tenant = tree.largest_fit(deployment="gpt@oa", lane="interactive", tenant="acme",
                                   feature="summarizer")
    assert with_tenant.total_tokens == 3_000 and with_tenant.admits(Estimate(2_000, 1_000))
    assert not with_tenant.admits(Estimate(2_000, 1_001))


def test_a_job_that_can_never_fit_is_explained_with_numbers(store: BudgetStore, tree: BudgetTree) -> None:
    huge = Estimate(30_000, 10_000)
    message = tree.too_large(deployment="gpt@oa", lane="standard", tenant="globex", feature=None,
                             estimate=huge)
    assert message is not None
    assert "40000 tokens" in message and "gpt@oa TPM" in message and "37800" in message
    assert "30%" in message
    admission = store.try_reserve("huge", path(tree, estimate=huge), ttl_s=60, now=T0)
    assert admission.never
    assert tree.too_large(deployment="gpt@oa", lane="interactive", tenant="globex", feature=None,
                          estimate=Estimate(30_000, 20_000)) is None


def test_too_large_names_a_feature_cap(tree: BudgetTree) -> None:
    message = tree.too_large(deployment="gpt@oa", lane="batch", tenant="acme", feature="summarizer",
                             estimate=Estimate(3_000, 1))
    assert message and "feature summarizer of tenant acme" in message and "3000 TPM" in message


def test_settle_costs_mirror_what_each_meter_charged(tree: BudgetTree, keys: Keys) -> None:
    reserved, used = Estimate(100, 500), Estimate(90, 20)
    openai = tree.settle_costs(deployment="gpt@oa", lane="batch", tenant="acme", feature="summarizer",
                               reserved=reserved, used=used)
    assert openai[keys.budget_bucket("dep", "gpt@oa", "rpm")] == 1
    assert openai[keys.budget_bucket("dep", "gpt@oa", "tpm")] == 590  # max_tokens is never refunded
    assert openai[keys.budget_bucket("lane", "batch", "gpt@oa", "tpm")] == 590
    assert openai[keys.budget_bucket("tenant", "acme", "hard")] == 110  # the tenant pays what it used
    anthropic = tree.settle_costs(deployment="claude@an", lane="standard", tenant="globex", feature=None,
                                  reserved=reserved, used=used)
    assert anthropic == {keys.budget_bucket("dep", "claude@an", "rpm"): 1,
                         keys.budget_bucket("dep", "claude@an", "itpm"): 90,
                         keys.budget_bucket("dep", "claude@an", "otpm"): 20}


def test_reserve_then_settle_through_the_tree(store: BudgetStore, tree: BudgetTree, keys: Keys) -> None:
    reserved, used = Estimate(1_000, 1_000), Estimate(1_000, 300)
    buckets = path(tree, deployment="claude@an", lane="interactive", tenant="acme", estimate=reserved)
    assert store.try_reserve("j1:1", buckets, ttl_s=60, allow_borrow=True, now=T0).ok
    costs = tree.settle_costs(deployment="claude@an", lane="interactive", tenant="acme", feature=None,
                              reserved=reserved, used=used)
    assert store.settle("j1:1", costs, now=T0)
    levels = store.levels(buckets, now=T0)
    assert levels[keys.budget_bucket("dep", "claude@an", "otpm")] == pytest.approx(1_200 - 300)
    assert levels[keys.budget_bucket("tenant", "acme", "hard")] == pytest.approx(12_000 - 1_300)


def test_header_sync_pulls_the_deployment_down_to_what_the_provider_has_left(
        store: BudgetStore, tree: BudgetTree, keys: Keys) -> None:
    state = {"tokens_limit": 60_000, "tokens_remaining": 20_000, "requests_remaining": 599}
    targets = tree.header_targets("gpt@oa", state)
    levels = store.sync(targets, now=T0)
    assert levels[keys.budget_bucket("dep", "gpt@oa", "tpm")] == pytest.approx(20_000 - 6_000)
    assert levels[keys.budget_bucket("dep", "gpt@oa", "rpm")] == pytest.approx(539)
    assert store.sync(tree.header_targets("gpt@oa", {"tokens_remaining": 60_000}), now=T0) == {
        keys.budget_bucket("dep", "gpt@oa", "tpm"): pytest.approx(14_000)}  # never raised
    assert tree.deployment_bucket_keys("claude@an") == {
        axis: keys.budget_bucket("dep", "claude@an", axis) for axis in ("rpm", "itpm", "otpm")}


def test_header_sync_counts_the_refill_since_the_provider_metered_the_call(
        store: BudgetStore, tree: BudgetTree, keys: Keys) -> None:
    """A call that took 2 s brings headers counted when it was sent: the provider has refilled 2 s of
    its limit since (60,000 TPM: 1,000 tokens/s), so the bucket is pulled down to that, not below."""
    state = {"tokens_limit": 60_000, "tokens_remaining": 7_000}
    for age_s, expected in ((2.0, 7_000 + 2_000 - 6_000), (0.0, 1_000)):
        keys = fresh_keys()  # each from a bucket nothing has synced yet (the sync moves its headroom)
        tree, store = BudgetTree(make_settings(), keys), BudgetStore(store.r, keys)
        tpm = keys.budget_bucket("dep", "gpt@oa", "tpm")
        assert store.sync(tree.header_targets("gpt@oa", state, age_s=age_s), now=T0)[tpm] == pytest.approx(expected)


def test_every_configured_bucket_is_listed_once(tree: BudgetTree, keys: Keys) -> None:
    listed = [b.key for b in tree.all_buckets()]
    assert len(listed) == len(set(listed))
    assert keys.budget_bucket("feature", "acme", "summarizer", "hard") in listed
    assert keys.budget_bucket("lane", "batch", "gpt@oa", "tpm") in listed
    assert len(listed) == 2 + 3 + 1 + 2 + 3  # deployments, batch lane buckets, tenant acme


def test_burst_below_a_minute_shrinks_capacity_not_rate(keys: Keys) -> None:
    settings = make_settings()
    object.__setattr__(settings.deployments[0], "burst_s", 6.0)  # until DeploymentConfig has the field
    rpm, tpm = BudgetTree(settings, keys).buckets_for(deployment="gpt@oa", lane="interactive",
                                                      tenant="globex", feature=None, estimate=SMALL)
    assert (tpm.capacity, tpm.rate) == (pytest.approx(5_400), pytest.approx(900))
