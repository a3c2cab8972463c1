"""Breaker tests run against the real Redis (db 15), each test under a key prefix of its own.

Every key a test makes lives under ``{<session prefix>-<test id>}`` and is deleted when the test ends.
Times are explicit (``now``) unless a test is about the Redis clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import redis

from shared.breaker import Breakers
from shared.config import BreakerConfig
from shared.keys import Keys
from tests.conftest import session_redis

SESSION = f"gwbrk{uuid.uuid4().hex[:8]}"
DEP = "gpt@oa"
T0 = 1_000_000.0

MakeBreakers = Callable[..., Breakers]


def drop(client: redis.Redis, keys: Keys) -> None:
    for key in client.scan_iter(match=f"{keys.tag}*", count=1000):
        client.delete(key)


@pytest.fixture(scope="session")
def client() -> Iterator[redis.Redis]:
    yield from session_redis(SESSION)


@pytest.fixture
def keys(client: redis.Redis) -> Iterator[Keys]:
    k = Keys(f"{SESSION}-{uuid.uuid4().hex[:8]}")
    yield k
    drop(client, k)


@pytest.fixture
def make(client: redis.Redis, keys: Keys) -> MakeBreakers:
    """Breakers over this test's keys; keyword arguments override the config of ``DEP``."""

    def build(redis_client: redis.Redis | None = None, **cfg: object) -> Breakers:
        return Breakers(redis_client or client, keys, {DEP: BreakerConfig(**cfg)})  # type: ignore[arg-type]

    return build


@pytest.fixture
def breakers(make: MakeBreakers) -> Breakers:
    """The defaults: 30 s window, 10 calls, 50 %, 5 x 429, slow at 60 s, open 15 s, 3 probes."""
    return make()
