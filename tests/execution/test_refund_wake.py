"""An attempt's refund wakes the scheduler only when something waits that it could admit
(``execution.settle.wake_scheduler``), against the test Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from execution.settle import wake_scheduler
from shared.keys import Keys
from tests.conftest import REDIS_URL


@pytest.fixture
def keys() -> Keys:
    return Keys(f"gwt-wake-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def client(keys: Keys) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    yield r
    r.delete(keys.wake, keys.delayed, *(keys.waiting_count(lane) for lane in ("interactive", "standard", "batch")))


def test_nothing_waiting_no_round_for_the_scheduler(client: redis.Redis, keys: Keys) -> None:
    assert wake_scheduler(client, keys).run() == 0
    assert client.llen(keys.wake) == 0


@pytest.mark.parametrize("lane", ["interactive", "standard", "batch"])
def test_a_job_waiting_in_any_lane_is_woken_for(client: redis.Redis, keys: Keys, lane: str) -> None:
    client.set(keys.waiting_count(lane), 3)
    assert wake_scheduler(client, keys).run() == 1
    assert wake_scheduler(client, keys).run() == 1  # a burst of refunds leaves one token: one round
    assert client.lrange(keys.wake, 0, -1) == ["1"]


def test_a_retry_waiting_out_its_backoff_is_woken_for(client: redis.Redis, keys: Keys) -> None:
    client.zadd(keys.delayed, {"{}": 1})
    assert wake_scheduler(client, keys).run() == 1
    assert client.llen(keys.wake) == 1
