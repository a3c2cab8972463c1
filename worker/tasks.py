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
from shared.envelope import Unreadable, read_entry
from worker.attempt import fail_unreadable, run_attempt
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


def _attempt(raw: dict[str, Any]) -> None:
    """Run the attempt in ``raw``; an envelope this version cannot read fails its job, nothing else."""
    env = read_entry(raw)
    if isinstance(env, Unreadable):
        fail_unreadable(env)
        return
    run_attempt(env)


@celery_app.task(name=EXECUTE_TASK)
def execute(envelope: dict[str, Any]) -> None:
    _attempt(envelope)


@celery_app.task(name=EXECUTE_MANY_TASK)
def execute_many(envelopes: list[dict[str, Any]]) -> None:
    if not isinstance(envelopes, list):
        envelopes = [envelopes]
    futures = [attempt_pool().submit(_attempt, raw) for raw in envelopes]
    wait(futures)
    for future in futures:
        if (exc := future.exception()) is not None:
            log.error("an attempt failed in the worker: %r", exc, exc_info=exc)
