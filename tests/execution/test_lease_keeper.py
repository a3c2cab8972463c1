"""The heartbeat keeps a live call's short lease alive, lets a dead, stuck or superseded one run out,
and takes a lease back after Redis forgot it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from execution.lease_keeper import LeaseKeeper
from shared.attempt_leases import AttemptLeases
from shared.config import AdmissionConfig
from shared.keys import Keys
from tests.conftest import REDIS_URL
from tests.envelopes import make_envelope

FAST = AdmissionConfig(attempt_lease_s=0.6, heartbeat_s=0.1)


@pytest.fixture
def keeper() -> Iterator[tuple[LeaseKeeper, redis.Redis, Keys]]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(f"lk{uuid.uuid4().hex[:8]}")
    keeper = LeaseKeeper(AttemptLeases(client, keys), FAST)
    yield keeper, client, keys
    keeper.stop()
    for key in client.scan_iter(match=f"{keys.tag}*"):
        client.delete(key)


def _leased(client: redis.Redis, keys: Keys, token: str) -> object:
    env = make_envelope("acme")
    env.token = token
    client.set(keys.lease(env.id), token, px=600)
    return env


def _wait_beats(n: int = 6) -> None:
    time.sleep(n * FAST.heartbeat_s + 1.5 * FAST.attempt_lease_s)  # well past the lease's own length


def test_a_live_call_keeps_its_lease_past_the_lease_length(keeper: tuple) -> None:
    k, client, keys = keeper
    env = _leased(client, keys, "t1")
    k.hold(env, for_s=60)
    _wait_beats()
    assert client.get(keys.lease(env.id)) == "t1"
    k.drop(env)
    _wait_beats()
    assert client.get(keys.lease(env.id)) is None  # no heartbeat: it runs out, recovery may send it again


def test_a_stuck_call_is_let_go(keeper: tuple) -> None:
    k, client, keys = keeper
    env = _leased(client, keys, "t1")
    k.hold(env, for_s=0.2)  # its timeout has long passed: a process alive but stuck is treated as dead
    _wait_beats()
    assert client.get(keys.lease(env.id)) is None and k.held() == 0


def test_a_job_dispatched_again_is_left_to_its_new_dispatch(keeper: tuple) -> None:
    k, client, keys = keeper
    env = _leased(client, keys, "old")
    k.hold(env, for_s=60)
    client.set(keys.lease(env.id), "new", px=60_000)
    _wait_beats()
    assert client.get(keys.lease(env.id)) == "new" and k.held() == 0


def test_a_lease_redis_forgot_is_taken_back(keeper: tuple) -> None:
    k, client, keys = keeper
    env = _leased(client, keys, "t1")
    k.hold(env, for_s=60)
    client.delete(keys.lease(env.id))  # Redis restarted empty
    _wait_beats()
    assert client.get(keys.lease(env.id)) == "t1"
