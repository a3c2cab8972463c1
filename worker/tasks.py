"""Celery tasks: the thin shell around ``worker.attempt``.

``execute`` carries one attempt (the fast lane); ``execute_many`` a chunk of a scheduler round,
run side by side on the process's attempt pool so that a slow call holds up only its own job's
record, never its neighbours'. The message is acknowledged once every attempt in it has ended;
a redelivered message finds the finished ones' leases gone and drops them unsent.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from shared.config import get_settings
from shared.queues import Envelope
from worker.attempt import run_attempt
from worker.celery_app import EXECUTE_MANY_TASK, EXECUTE_TASK, celery_app

log = logging.getLogger("gateway.worker")
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def attempt_pool() -> ThreadPoolExecutor:
    """Threads for the attempts of ``execute_many`` messages: as many calls in flight as the worker's
    configured concurrency (they only wait on I/O)."""
    global _pool
    with _pool_lock:  # the first messages may arrive on several Celery threads at once
        if _pool is None:
            _pool = ThreadPoolExecutor(get_settings().worker.concurrency, thread_name_prefix="attempt")
        return _pool


@celery_app.task(name=EXECUTE_TASK)
def execute(envelope: dict[str, Any]) -> None:
    run_attempt(Envelope(**envelope))


@celery_app.task(name=EXECUTE_MANY_TASK)
def execute_many(envelopes: list[dict[str, Any]]) -> None:
    futures = [attempt_pool().submit(run_attempt, Envelope(**raw)) for raw in envelopes]
    wait(futures)
    for raw, future in zip(envelopes, futures, strict=True):
        if (exc := future.exception()) is not None:
            log.error("attempt %s of job %s failed in the worker: %r", raw.get("attempt"), raw.get("id"), exc,
                      exc_info=exc)
