"""Throughput of the breaker scripts from one Python client: ``python -m tests.breaker.bench_breaker``.

Not a test (timings never are): prints decisions per second, round trips per decision (counted on
the client's connection) and commands run inside Redis per decision (INFO commandstats, server-wide:
only exact when nothing else uses the server).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis

from shared.breaker import Breakers
from shared.config import BreakerConfig
from shared.keys import Keys
from tests.conftest import REDIS_URL

N = 5_000


class CountingConnection(redis.Connection):
    """Counts what this client sends, so other clients of the same Redis do not blur the number."""

    sent = 0

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        CountingConnection.sent += 1
        return super().send_packed_command(command, check_health)


def lua_commands(r: redis.Redis) -> int:
    """All commands Redis ran (server-wide: includes other clients when the server is shared)."""
    return sum(int(v["calls"]) for v in r.info("commandstats").values())


def measure(label: str, r: redis.Redis, n: int, fn: Callable[[], None]) -> None:
    sent, ran, start = CountingConnection.sent, lua_commands(r), time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    trips = (CountingConnection.sent - sent - 1) / n  # minus the INFO call
    inside = (lua_commands(r) - ran - 2) / n
    print(f"{label:<40} {n / elapsed:>8,.0f}/s   {trips:.2f} round trips, "
          f"~{inside:.1f} commands run in Redis, each")


def times(fn: Callable[[int], object]) -> Callable[[], None]:
    """A run of N calls of ``fn(i)``."""
    def run() -> None:
        for i in range(N):
            fn(i)
    return run


def closed_bench(r: redis.Redis, keys: Keys) -> None:
    """The common path: a closed breaker (min_calls out of reach so that it stays closed)."""
    deps = [f"dep{i}" for i in range(10)]
    b = Breakers(r, keys, {d: BreakerConfig(min_calls=10**9) for d in deps})
    b.allow(deps[0]), b.record(deps[0], ok=True), b.states(deps)  # load the scripts

    def attempt(i: int) -> None:
        if b.allow("dep0").allowed:
            b.record("dep0", ok=i % 4 != 0, kind="server")

    def from_threads() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(attempt, range(N)))

    measure("allow (closed)", r, N, times(lambda i: b.allow("dep0")))
    measure("record (closed, 25 % failures)", r, N, times(lambda i: b.record("dep0", ok=i % 4 != 0, kind="server")))
    measure("allow + record (one attempt)", r, N, times(attempt))
    measure("allow + record, 8 threads", r, N, from_threads)
    measure("states() of 10 deployments", r, N, times(lambda i: b.states(deps)))


def half_open_bench(r: redis.Redis, keys: Keys) -> None:
    """allow while half-open with every slot taken: the path a busy scheduler hits during recovery."""
    b = Breakers(r, keys, {"ho": BreakerConfig(consecutive_429=1, open_s=1, probe_timeout_s=3600)})
    b.record("ho", ok=False, kind="rate_limit", now=1.0)
    for _ in range(3):
        b.allow("ho", now=3.0)

    measure("allow (half-open, no slot left)", r, N, times(lambda i: b.allow("ho", now=4.0)))


def main() -> None:
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True, connection_class=CountingConnection)
    keys = Keys(f"gwbench{uuid.uuid4().hex[:6]}")
    try:
        closed_bench(r, keys)
        half_open_bench(r, keys)
    finally:
        for key in r.scan_iter(match=f"{keys.tag}*", count=1000):
            r.delete(key)


if __name__ == "__main__":
    main()
