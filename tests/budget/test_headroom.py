"""Headroom that adapts to the provider's headers, through the real Lua scripts (``budget_sync.lua``):
it creeps up to ``headroom_max`` while the headers agree with the mirror, steps back when they show
less than the mirror holds, and backs off to at least the configured headroom on a 429.

The account (tests/budget/conftest.py): gpt@oa, 60,000 TPM and 600 RPM, a minute's burst, headroom 0.9.
"""

from __future__ import annotations

import pytest
import redis

from shared.budget import BudgetStore, BudgetTree, Estimate
from shared.keys import Keys
from tests.budget.conftest import make_settings

T0 = 4_000_000.0
FULL = {"tokens_limit": 60_000, "tokens_remaining": 60_000, "requests_limit": 600, "requests_remaining": 600}
JOB = Estimate(500, 500)


def setup(client: redis.Redis, keys: Keys, **deployment: float) -> tuple[BudgetTree, BudgetStore]:
    settings = make_settings()
    dep = settings.deployments[0].model_copy(update=deployment)
    tree = BudgetTree(settings.model_copy(update={"deployments": [dep, *settings.deployments[1:]]}), keys)
    return tree, BudgetStore(client, keys, reserve=tree.reserve_rule())


def headroom(store: BudgetStore, keys: Keys) -> float:
    key = keys.budget_bucket("dep", "gpt@oa", "tpm")
    return store.headrooms([key]).get(key, 0.9)


def sync(store: BudgetStore, tree: BudgetTree, state: dict[str, float], now: float = T0, *,
         refused: bool = False) -> None:
    store.sync(tree.header_targets("gpt@oa", state, refused=refused), refused=refused, now=now)


def admitted(store: BudgetStore, tree: BudgetTree, prefix: str, now: float = T0) -> int:
    n = 0
    while store.try_reserve(f"{prefix}{n}", tree.buckets_for(deployment="gpt@oa", lane="interactive",
                                                            tenant="globex", feature=None, estimate=JOB),
                            ttl_s=600, now=now).ok:
        n += 1
    return n


def test_a_deployment_never_synced_runs_at_its_configured_headroom(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    assert admitted(store, tree, "j") == 54  # 0.9 x 60,000 / 1,000


def test_headers_that_agree_raise_the_headroom_up_to_its_most(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    seen = []
    for i in range(200):
        sync(store, tree, FULL, T0 + i)
        seen.append(headroom(store, keys))
    assert seen == sorted(seen) and seen[0] > 0.9
    assert seen[-1] == pytest.approx(0.995)  # headroom_max
    assert admitted(store, tree, "j", T0 + 200) == 59  # 0.995 x 60,000 / 1,000: the whole account, nearly


def test_a_429_backs_off_to_at_least_the_configured_headroom(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    for i in range(200):
        sync(store, tree, FULL, T0 + i)
    sync(store, tree, {}, T0 + 200, refused=True)  # a 429 without rate-limit headers still counts
    assert headroom(store, keys) == pytest.approx(0.9)
    sync(store, tree, {}, T0 + 201, refused=True)
    assert headroom(store, keys) == pytest.approx(0.8)  # the margin doubles on each 429 in a row, to headroom_min
    for i in range(5):
        sync(store, tree, {}, T0 + 202 + i, refused=True)
    assert headroom(store, keys) == pytest.approx(0.8)


def test_headers_showing_less_than_the_mirror_lower_the_headroom_and_the_level(
        client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys)
    sync(store, tree, {"tokens_limit": 60_000, "tokens_remaining": 30_000})  # another service spent half
    assert headroom(store, keys) < 0.9
    key = keys.budget_bucket("dep", "gpt@oa", "tpm")
    assert store.levels([key], now=T0)[key] == pytest.approx(30_000 - 6_000)  # less the slice it kept out of


def test_a_fixed_headroom_stays_where_it_is_configured(client: redis.Redis, keys: Keys) -> None:
    tree, store = setup(client, keys, headroom_max=0.9, headroom_min=0.9)
    for i in range(50):
        sync(store, tree, FULL, T0 + i)
    sync(store, tree, {}, T0 + 50, refused=True)
    assert headroom(store, keys) == pytest.approx(0.9)
    assert admitted(store, tree, "j", T0 + 50) == 54


def test_a_job_bigger_than_a_backed_off_bucket_goes_when_it_is_full(client: redis.Redis, keys: Keys) -> None:
    """50,000 tokens fit the configured bucket (54,000) but not one backed off to 0.8 (48,000): it waits
    for the bucket to be full, then goes into debt, rather than for the headroom to recover."""
    tree, store = setup(client, keys)
    sync(store, tree, {}, T0, refused=True)
    sync(store, tree, {}, T0, refused=True)
    assert headroom(store, keys) == pytest.approx(0.8)
    big = tree.buckets_for(deployment="gpt@oa", lane="interactive", tenant="globex", feature=None,
                           estimate=Estimate(40_000, 10_000))
    first = store.try_reserve("big", big, ttl_s=600, now=T0)
    assert first.ok
    again = store.try_reserve("big-again", big, ttl_s=600, now=T0)
    assert not again.ok and not again.never  # waits for the bucket to refill, does not fail
    assert store.try_reserve("big-again", big, ttl_s=600, now=T0 + 200).ok


def test_the_first_debit_from_a_full_bucket_refills_only_once_it_can_have_reached_the_provider(
        client: redis.Redis, keys: Keys) -> None:
    """The provider's full bucket gains nothing until the request arrives; the mirror, which debited at
    admission, starts refilling a second later (900 tokens/s here) so a dump's first burst is not
    credited with refill the provider never had."""
    tree, store = setup(client, keys)
    job = tree.buckets_for(deployment="gpt@oa", lane="batch", tenant="globex", feature=None,
                           estimate=Estimate(5_000, 5_000))
    assert store.try_reserve("dump", job, ttl_s=600, now=T0).ok
    key = keys.budget_bucket("dep", "gpt@oa", "tpm")
    assert store.levels([key], now=T0 + 1.0)[key] == pytest.approx(44_000)
    assert store.levels([key], now=T0 + 2.0)[key] == pytest.approx(44_900)
