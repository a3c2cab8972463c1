"""Processes that say they are alive: each worker and scheduler beats into Redis every few seconds.

Workers and schedulers have no HTTP port for Prometheus to scrape, and Flower only sees workers. A
sorted set per kind of process, scored by each one's last beat, lets any api report how many are up
(``gateway_processes_alive``, the console) and a container healthcheck ask about its own process
(``gateway health``). A beat is one pipelined round trip every ``BEAT_S``; a process that stops
beating counts as down after ``ALIVE_WITHIN_S``, and is forgotten after an hour.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any, Literal

import redis

from shared.keys import Keys

log = logging.getLogger("gateway.heartbeats")

Kind = Literal["worker", "scheduler"]
KINDS: tuple[Kind, ...] = ("worker", "scheduler")
BEAT_S = 5.0
ALIVE_WITHIN_S = 20.0
FORGET_AFTER_S = 3600.0


def process_name() -> str:
    """This process as its heartbeat names it: host and pid (several workers may share a host)."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeats:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys

    def beat(self, kind: Kind, name: str, now: float | None = None) -> None:
        now = now or time.time()
        with self.r.pipeline(transaction=False) as pipe:
            pipe.zadd(self.keys.heartbeats(kind), {name: now})
            pipe.zremrangebyscore(self.keys.heartbeats(kind), "-inf", now - FORGET_AFTER_S)
            pipe.execute()

    def stop(self, kind: Kind, name: str) -> None:
        """A clean shutdown: the process is gone now, not in ``ALIVE_WITHIN_S``."""
        self.r.zrem(self.keys.heartbeats(kind), name)

    def alive(self, now: float | None = None) -> dict[str, list[str]]:
        """The processes of each kind that beat lately (one round trip)."""
        since = (now or time.time()) - ALIVE_WITHIN_S
        with self.r.pipeline(transaction=False) as pipe:
            for kind in KINDS:
                pipe.zrangebyscore(self.keys.heartbeats(kind), since, "+inf")
            replies = pipe.execute()
        return {kind: sorted(_text(n) for n in names) for kind, names in zip(KINDS, replies, strict=True)}

    def start(self, kind: Kind, name: str | None = None) -> threading.Thread:
        """Beat from a daemon thread for as long as the process lives; a failed beat is retried next time."""
        who = name or process_name()

        def loop() -> None:
            while True:
                try:
                    self.beat(kind, who)
                except (redis.RedisError, OSError) as exc:
                    log.warning("heartbeat of %s %s failed: %s", kind, who, exc)
                time.sleep(BEAT_S)

        thread = threading.Thread(target=loop, name=f"heartbeat-{kind}", daemon=True)
        thread.start()
        return thread


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
