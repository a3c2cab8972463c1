"""``WaitingQueues.push_many`` leaves Redis exactly as one ``push`` per envelope would (real Redis)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from shared.envelope import Envelope
from shared.keys import Keys
from shared.queues import WaitingQueues
from tests.conftest import REDIS_URL
from tests.envelopes import make_envelope

QueuesFactory = Callable[[], tuple[WaitingQueues, Keys]]


@pytest.fixture
def client() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


@pytest.fixture
def new_queues(client: redis.Redis) -> Iterator[QueuesFactory]:
    """Queues under a fresh key prefix each call; every key they made is deleted afterwards."""
    made: list[Keys] = []

    def make() -> tuple[WaitingQueues, Keys]:
        made.append(Keys(f"pm{uuid.uuid4().hex[:8]}"))
        return WaitingQueues(client, made[-1]), made[-1]

    yield make
    for keys in made:
        for key in client.scan_iter(match=f"{keys.tag}*"):
            client.delete(key)


def envelope(lane: str, tenant: str, estimate: int) -> Envelope:
    return make_envelope(tenant, lane, tokens=estimate)


def state(client: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Every key under the prefix, by its name without the prefix, with its whole value."""
    readers: dict[Any, Callable[[str], Any]] = {
        "list": lambda k: client.lrange(k, 0, -1), "set": client.smembers, "string": client.get}
    return {key[len(keys.tag):]: readers[client.type(key)](key) for key in client.scan_iter(match=f"{keys.tag}*")}


def mixed_batch() -> list[Envelope]:
    """Interleaved lanes and tenants, so order within each queue is what is being checked."""
    shape = [("batch", "acme", 10), ("interactive", "acme", 3), ("batch", "globex", 7), ("batch", "acme", 0),
             ("standard", "acme", 5), ("batch", "globex", 1), ("interactive", "globex", 2), ("batch", "acme", 4)]
    return [envelope(lane, tenant, est) for lane, tenant, est in shape]


def test_push_many_equals_one_push_per_envelope(client: redis.Redis, new_queues: QueuesFactory) -> None:
    one_by_one, keys_a = new_queues()
    at_once, keys_b = new_queues()
    already = envelope("batch", "acme", 6)  # counters and queues that exist already are added to
    batch = mixed_batch()
    for q in (one_by_one, at_once):
        q.push(already)
    for env in batch:
        one_by_one.push(env)
    at_once.push_many(batch)
    expected = state(client, keys_a)
    assert state(client, keys_b) == expected
    assert expected[":waiting:batch"] == "6" and expected[":waiting_tokens:batch"] == "28"
    assert expected[":wake"] == ["1"]


def test_pushed_in_bulk_pops_in_order_with_the_books_back_at_zero(client: redis.Redis,
                                                                  new_queues: QueuesFactory) -> None:
    q, keys = new_queues()
    batch = mixed_batch()
    q.push_many(batch)
    popped = {(lane, tenant): q.pop(lane, tenant, count=100)
              for lane, tenant in {(e.lane, e.tenant) for e in batch}}
    for (lane, tenant), envs in popped.items():
        assert [e.id for e in envs] == [e.id for e in batch if (e.lane, e.tenant) == (lane, tenant)]
    assert all(q.waiting_in_lane(lane) == 0 and q.waiting_tokens(lane) == 0
               for lane in ("interactive", "standard", "batch"))
    assert q.missing([e.id for e in batch]) == [e.id for e in batch]
    assert client.scard(keys.queued_ids) == 0


def test_an_empty_push_many_changes_nothing(client: redis.Redis, new_queues: QueuesFactory) -> None:
    q, keys = new_queues()
    q.push_many([])
    assert state(client, keys) == {}
