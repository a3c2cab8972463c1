"""Property-based tests of the bucket arithmetic: the Lua scripts against a reference model."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.budget import Bucket, BudgetStore
from tests.budget.conftest import fresh_keys

T0 = 3_000_000.0
CAP, RATE = 1_000.0, 50.0
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

reserve_op = st.tuples(st.just("reserve"), st.floats(0, 1_200), st.booleans())
settle_op = st.tuples(st.just("settle"), st.integers(0, 30), st.floats(0, 1_500))
release_op = st.tuples(st.just("release"), st.integers(0, 30), st.just(0.0))
wait_op = st.tuples(st.just("wait"), st.floats(0, 10), st.just(0.0))
pull_op = st.tuples(st.just("pull"), st.floats(-2_000, 2_000), st.just(0.0))
ops = st.lists(st.one_of(reserve_op, settle_op, release_op, wait_op, pull_op), max_size=30)


@dataclass
class Model:
    """The bucket as plain Python: what the scripts must agree with."""

    borrowable: bool
    level: float = CAP
    now: float = T0
    held: dict[str, float] = field(default_factory=dict)

    def reserve(self, rid: str, cost: float, borrow: bool) -> bool:
        lend = self.borrowable and borrow
        if not lend and self.level - cost < 0:
            return False
        self.level = max(-CAP, self.level - cost)
        self.held[rid] = cost
        return True

    def settle(self, rid: str, actual: float) -> bool:
        if rid not in self.held:
            return False
        self.level = min(CAP, max(-CAP, self.level + self.held.pop(rid) - actual))
        return True

    def wait(self, dt: float) -> None:
        later = self.now + dt  # the scripts see time as floats too: a tiny dt may not move the clock at all
        self.level = min(CAP, self.level + (later - self.now) * RATE)
        self.now = later

    def pull(self, remaining: float) -> None:
        self.level = min(self.level, max(-CAP, remaining))


def run(store: BudgetStore, model: Model, b: Bucket, op: tuple) -> None:
    kind, x, y = op
    if kind == "reserve":
        rid = f"r{len(model.held)}-{uuid.uuid4().hex[:4]}"
        ok = store.try_reserve(rid, [Bucket(b.key, CAP, RATE, x, borrowable=b.borrowable)], ttl_s=10_000,
                               allow_borrow=y, now=model.now).ok
        assert ok == model.reserve(rid, x, y)
    elif kind in ("settle", "release"):
        rid = sorted(model.held)[x % len(model.held)] if model.held else "none"
        assert store.settle(rid, {b.key: y}, now=model.now) == model.settle(rid, y)
    elif kind == "wait":
        model.wait(x)
    else:
        store.pull_down(b.key, x, CAP, RATE, now=model.now)
        model.pull(x)


@SETTINGS
@given(steps=ops, borrowable=st.booleans())
def test_the_scripts_agree_with_the_model_and_stay_within_capacity(
        client: redis.Redis, steps: list, borrowable: bool) -> None:
    store = BudgetStore(client, fresh_keys())
    b = Bucket(store.keys.budget_bucket("p"), CAP, RATE, 0, borrowable=borrowable)
    model = Model(borrowable)
    for op in steps:
        run(store, model, b, op)
        level = store.levels([b], now=model.now)[b.key]
        assert level == pytest.approx(model.level, abs=1e-6)
        assert -CAP <= level <= CAP


@SETTINGS
@given(steps=st.lists(st.tuples(st.floats(0, 5), st.floats(1, 600), st.floats(0, 1)), max_size=40))
def test_what_a_hard_bucket_admits_over_any_window_is_bounded(client: redis.Redis, steps: list) -> None:
    """Admitted cost in [t_i, t_j] <= capacity + rate x (t_j - t_i), even with refunds in between,
    counting what each admission finally cost."""
    store = BudgetStore(client, fresh_keys())
    key = store.keys.budget_bucket("w")
    now, admitted = T0, []
    for i, (dt, cost, used) in enumerate(steps):
        now += dt
        if store.try_reserve(f"r{i}", [Bucket(key, CAP, RATE, cost)], ttl_s=10_000, now=now).ok:
            store.settle(f"r{i}", {key: cost * used}, now=now)
            admitted.append((now, cost * used))
    for i, (start, _) in enumerate(admitted):
        total = 0.0
        for end, cost in admitted[i:]:
            total += cost
            assert total <= CAP + RATE * (end - start) + 1e-6
