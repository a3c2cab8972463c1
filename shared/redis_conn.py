"""Redis clients, one pool per process and URL (sync for threads, asyncio for the api's waiter)."""

from __future__ import annotations

from functools import lru_cache

import redis
import redis.asyncio as aioredis


@lru_cache(maxsize=8)
def sync_redis(url: str) -> redis.Redis:
    """A process's threads borrow from one pool of at most 256 connections; past that a thread waits
    for one (up to 20 s) rather than fail: a worker may run thousands of calls, whose short Redis
    steps rarely overlap."""
    pool = redis.BlockingConnectionPool.from_url(url, decode_responses=True, health_check_interval=30,
                                                 socket_connect_timeout=5, max_connections=256, timeout=20)
    return redis.Redis(connection_pool=pool)


def async_redis(url: str) -> aioredis.Redis:
    return aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                   socket_connect_timeout=5)


def redis_answers(url: str) -> bool:
    """True when a Redis server answers PING at ``url`` (used at start-up and by /readyz)."""
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False
