"""A round reads each tenant's queue ahead and pops what it took at the end: nothing lost, order kept."""

from __future__ import annotations

import time

import redis

from shared.envelope import Envelope
from tests.scheduler.test_fair_queuing import build, client, job, push  # noqa: F401 - client is a fixture


def test_a_round_pops_exactly_what_it_decided_on(client: redis.Redis) -> None:  # noqa: F811
    fq, queues, admitter, keys = build(client, tpm=10_000, reserve=0.0)
    envs = {"a": [job("a", 500) for _ in range(40)], "b": [job("b", 500) for _ in range(3)]}
    push(queues, admitter, *envs["a"], *envs["b"])
    result = fq.run_round(256, time.time())
    taken = {e.id for e in result.admitted}
    assert 0 < len(taken) < 43  # the budget stopped the round part way
    for tenant, pushed in envs.items():
        left = [Envelope.loads(raw).id for raw in client.lrange(keys.waiting("batch", tenant), 0, -1)]
        assert left == [e.id for e in pushed if e.id not in taken]  # queue order kept, nothing lost
    rest = [e for pushed in envs.values() for e in pushed if e.id not in taken]
    assert queues.waiting_in_lane("batch") == len(rest)
    assert queues.waiting_tokens("batch") == sum(e.tokens for e in rest)


def test_retries_that_are_due_are_promoted_by_the_round(client: redis.Redis) -> None:  # noqa: F811
    fq, queues, admitter, _ = build(client)
    retry = job("a", 10)
    admitter.prepare(retry)
    retry.not_before = time.time() - 1
    queues.delay(retry)
    assert [e.id for e in fq.run_round(10, time.time()).admitted] == [retry.id]
