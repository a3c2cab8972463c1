"""A process's Redis pool under more threads than it has connections: they wait their turn, none fails.

A worker runs a thread per call in flight (``worker.concurrency``, thousands), and each call's short
Redis steps borrow from one pool of 256 connections; when more than that overlap, the extra threads
must wait for a connection, not fail the attempt with ``Too many connections``.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from shared.redis_conn import sync_redis
from tests.conftest import PREFIX, REDIS_URL

THREADS = 300  # more than the pool's 256 connections, each held for a blocking read at the same moment


def test_more_threads_than_connections_wait_for_one_instead_of_failing() -> None:
    client, key = sync_redis(REDIS_URL), f"{PREFIX}:pool-test:{uuid.uuid4().hex}"
    together = threading.Barrier(THREADS)

    def hold_a_connection(_: int) -> None:
        together.wait()
        client.blpop([key], timeout=0.2)  # nothing is pushed: holds its connection until the timeout

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(hold_a_connection, range(THREADS)))  # re-raises any thread's error
    assert client.connection_pool.max_connections == 256
