"""The scheduler's pick-and-admit round against real Redis and the budget Lua scripts."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from scheduler.fair_queuing import FairQueuing
from shared.admission import Admitter
from shared.budget import Bucket
from shared.config import Settings
from shared.envelope import Envelope
from shared.keys import Keys
from shared.queues import WaitingQueues
from tests.conftest import REDIS_URL
from tests.envelopes import make_envelope


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r


def build(client: redis.Redis, *, tpm: int = 10_000_000, tenants: dict[str, Any] | None = None,
          reserve: float = 0.3) -> tuple[FairQueuing, WaitingQueues, Admitter, Keys]:
    settings = Settings(
        providers={"p": {"kind": "openai", "base_url": "http://127.0.0.1:1/v1"}},
        deployments=[{"name": "d", "provider": "p", "model": "gpt-4o-mini", "headroom": 1.0,
                      "limits": {"rpm": 1_000_000, "tpm": tpm}}],
        models={"m": ["d"]},
        lanes={"interactive": {"reserve": reserve}, "batch": {"ceiling": 1.0}},
        tenants=tenants or {"a": {}, "b": {}},
    )
    keys = Keys(f"fq{uuid.uuid4().hex[:8]}")
    queues = WaitingQueues(client, keys)
    admitter = Admitter(settings, client, keys)
    return FairQueuing(settings, admitter, queues), queues, admitter, keys


def job(tenant: str, max_tokens: int, lane: str = "batch", deadline_s: float = 600) -> Envelope:
    return make_envelope(tenant, lane, request={"model": "gpt-4o-mini", "max_tokens": max_tokens,
                                                "messages": [{"role": "user", "content": "x"}]},
                         deadline_s=deadline_s)


def push(queues: WaitingQueues, admitter: Admitter, *envs: Envelope) -> None:
    for env in envs:
        admitter.prepare(env)
        queues.push(env)


def tokens_by_tenant(admitted: list[Envelope]) -> Counter[str]:
    out: Counter[str] = Counter()
    for env in admitted:
        out[env.tenant] += env.tokens
    return out


def drain(admitter: Admitter, keys: Keys, leave: float) -> None:
    """Take the deployment's TPM bucket down to ``leave`` tokens with a reservation of our own."""
    meter = next(m for m in admitter.tree.meters("d") if m.axis == "tpm")
    ok = admitter.store.try_reserve("drain", [Bucket(meter.key, meter.capacity, meter.rate, meter.capacity - leave)],
                                    ttl_s=600)
    assert ok.ok


def test_weights_share_tokens_three_to_one(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client, tenants={"a": {"weight": 3}, "b": {"weight": 1}})
    push(queues, admitter, *[job("a", 100) for _ in range(60)], *[job("b", 100) for _ in range(60)])
    admitted = fq.run_round(40, time.time()).admitted
    share = tokens_by_tenant(admitted)
    assert len(admitted) == 40
    assert 28 <= share["a"] / admitted[0].tokens <= 32  # 30 of 40 for weight 3 of 4


def test_fairness_is_on_tokens_not_requests(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client)
    push(queues, admitter, *[job("a", 1000) for _ in range(30)], *[job("b", 100) for _ in range(300)])
    share = tokens_by_tenant(fq.run_round(110, time.time()).admitted)
    assert 0.8 <= share["a"] / share["b"] <= 1.25


def test_a_hard_limit_is_never_exceeded_and_blocks_nobody_else(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client, tenants={"a": {"hard_tpm": 3000}, "b": {}})
    push(queues, admitter, *[job("a", 100) for _ in range(100)], *[job("b", 100) for _ in range(20)])
    admitted = fq.run_round(500, time.time()).admitted
    share = tokens_by_tenant(admitted)
    assert share["a"] <= 3000 + 110  # its burst (a minute of 3000/min), plus refill during the round
    assert sum(e.tenant == "b" for e in admitted) == 20  # a at its limit never held b back


def test_a_soft_limit_borrows_idle_capacity_only_when_nobody_else_waits(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client, tenants={"a": {"soft_tpm": 1000}, "b": {}})
    push(queues, admitter, *[job("a", 100) for _ in range(30)])
    alone = tokens_by_tenant(fq.run_round(30, time.time()).admitted)
    assert alone["a"] > 1000  # nobody else waiting: it borrowed

    fq, queues, admitter, _ = build(client, tenants={"a": {"soft_tpm": 1000}, "b": {}})
    push(queues, admitter, *[job("a", 100) for _ in range(30)], *[job("b", 100) for _ in range(30)])
    admitted = fq.run_round(60, time.time()).admitted
    assert tokens_by_tenant(admitted)["a"] <= 1000 + 110  # others wait: no borrowing past its soft limit
    assert sum(e.tenant == "b" for e in admitted) == 30


def test_batch_leaves_what_the_interactive_lanes_recent_arrivals_need(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client, tpm=10_000, reserve=0.3)
    push(queues, admitter, *[job("b", 200, lane="interactive") for _ in range(20)])
    assert len(fq.run_round(100, time.time()).admitted) == 20  # ~4,100 tokens in an instant
    push(queues, admitter, *[job("a", 500) for _ in range(30)])
    assert fq.run_round(100, time.time()).admitted
    # Its meter says ~410 tokens/s: batch leaves 5 s of that plus its largest job (~2,260), not the 3,000
    # of the whole reserve nor only the 200 of its least (what is left is read at once: the bucket
    # refills 167 tokens a second, and the meter decays over ~10 s)
    tpm = next(m for m in admitter.tree.meters("d") if m.axis == "tpm")
    left = admitter.store.levels([tpm.key])[tpm.key]
    assert 2_000 <= left <= 2_260 + 505 + 200
    push(queues, admitter, job("b", 2000, lane="interactive"))
    admitted = fq.run_round(10, time.time()).admitted
    assert [e.lane for e in admitted] == ["interactive"]


def test_a_large_job_is_held_for_not_starved_by_small_ones(client: redis.Redis) -> None:
    fq, queues, admitter, keys = build(client, tpm=6000, reserve=0.0)
    drain(admitter, keys, leave=1000)
    large, smalls = job("a", 3000), [job("b", 100) for _ in range(20)]
    push(queues, admitter, large, *smalls)
    fq.finish[("batch", "b")] = 10_000  # b has had its share: the large job is next in fair order
    result = fq.run_round(50, time.time())
    assert result.admitted == []  # small jobs that fit are not let in ahead of it
    assert any(k.endswith(":dep:d:tpm") for k in result.held)
    assert queues.heads("batch", ["a"])["a"].id == large.id
    assert 0 < result.wake_in < 60  # the scheduler wakes when the bucket will have refilled


def test_expired_jobs_are_shed_not_admitted(client: redis.Redis) -> None:
    fq, queues, admitter, _ = build(client)
    late = job("a", 10, deadline_s=-1)
    push(queues, admitter, late, job("a", 10))
    result = fq.run_round(10, time.time())
    assert [e.id for e, _ in result.expired] == [late.id]
    assert len(result.admitted) == 1


def test_a_job_cancelled_while_waiting_is_dropped_without_waiting_for_its_budget(client: redis.Redis) -> None:
    fq, queues, admitter, keys = build(client, tpm=6000, reserve=0.0)
    drain(admitter, keys, leave=1000)
    large, small = job("a", 3000), job("a", 100)
    push(queues, admitter, large, small)
    assert fq.run_round(10, time.time()).admitted == []  # the large head waits for the bucket to refill
    queues.cancel([large.id])  # as DELETE /v1/jobs/{id} does once the store has it cancelled

    result = fq.run_round(10, time.time())

    assert [e.id for e in result.admitted] == [small.id]  # the job behind it goes at once
    assert result.expired == [] and result.failed == []  # nothing to record: the store ended it already
    assert queues.depth("batch", "a") == 0 and queues.waiting_in_lane("batch") == 0
    assert not client.sismember(keys.cancelled, large.id)  # dropped, and forgotten


def test_a_cancelled_job_is_never_admitted_even_when_it_fits(client: redis.Redis) -> None:
    fq, queues, admitter, keys = build(client)
    gone, kept = job("a", 10), job("b", 10)
    push(queues, admitter, gone, kept)
    queues.cancel([gone.id])

    result = fq.run_round(10, time.time())

    assert [e.id for e in result.admitted] == [kept.id]
    assert client.scard(keys.cancelled) == 0
