"""Celery tasks: the thin shell around ``execution.attempt``.

From the moment a message reaches the worker (prefetched, waiting for a slot) its dispatches' leases
are kept alive by the process's heartbeat (``hold_received``): a worker killed with messages it had
taken leaves leases that run out in seconds, and recovery sends those jobs again.

``execute`` carries one attempt (a fast-lane job the api did not send itself); ``execute_many`` a
chunk of a scheduler round, run side by side on the process's attempt pool so that a slow call holds
up only its own job's record, never its neighbours'. The message is acknowledged once every attempt
in it has ended; a redelivered message finds the finished ones' leases gone and drops them unsent.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from celery import Celery
from celery.signals import task_received

from execution.attempt import fail_unreadable, run_dispatched
from execution.context import AttemptContext
from shared.attempt_leases import LEASES_HEADER, parse_leases
from shared.config import Settings
from shared.envelope import Unreadable, read_entry

log = logging.getLogger("gateway.worker")

EXECUTE_TASK = "gateway.execute"
EXECUTE_MANY_TASK = "gateway.execute_many"
RECEIVED_WAIT_CALLS = 4  # a received message waits at most this many of the longest calls for its slot


class _Executor:
    """What a worker process runs attempts with, made when its first message arrives (after any fork):
    the attempt context and a pool of as many threads as calls it may hold in flight."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ready: tuple[AttemptContext, ThreadPoolExecutor] | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[AttemptContext, ThreadPoolExecutor]:
        with self._lock:  # the first messages may arrive on several Celery threads at once
            if self._ready is None:
                pool = ThreadPoolExecutor(self.settings.worker.concurrency, thread_name_prefix="attempt")
                self._ready = (AttemptContext(self.settings).warm_up(), pool)
            return self._ready

    def attempt(self, raw: Any) -> None:
        """Run the attempt in ``raw``; an envelope this version cannot read fails its job, nothing else."""
        ctx, _ = self.get()
        env = read_entry(raw)
        if isinstance(env, Unreadable):
            fail_unreadable(env, ctx)
            return
        run_dispatched(env, ctx)

    def hold_received(self, headers: dict[str, Any]) -> None:
        """A message this worker took: keep its dispatches' leases until its attempts start (then their
        own holds take over). Bounded: a message that waited longer than any call could is let go."""
        pairs = parse_leases(str(headers.get(LEASES_HEADER) or ""))
        if not pairs:
            return
        ctx, _ = self.get()
        for job_id, token in pairs:
            ctx.keeper.hold_dispatch(job_id, token, RECEIVED_WAIT_CALLS * ctx.longest_call_s)

    def attempts(self, envelopes: Any) -> None:
        ctx, pool = self.get()
        chunk = envelopes if isinstance(envelopes, list) else [envelopes]
        for env in map(read_entry, chunk):  # waiting for a thread, they are this process's: keep their leases
            if not isinstance(env, Unreadable):
                ctx.keeper.hold(env, ctx.longest_call_s)
        futures = [pool.submit(self.attempt, raw) for raw in chunk]
        wait(futures)
        for future in futures:
            if (exc := future.exception()) is not None:
                log.error("an attempt failed in the worker: %r", exc, exc_info=exc)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Give ``app`` the two tasks, running attempts with ``settings``."""
    executor = _Executor(settings)

    @task_received.connect(weak=False)
    def _received(sender: Any = None, request: Any = None, **_: Any) -> None:
        if request is None or request.task_name not in (EXECUTE_TASK, EXECUTE_MANY_TASK):
            return
        try:
            executor.hold_received(request.request_dict)
        except Exception:  # noqa: BLE001 - the lease then runs out and recovery resends: never lose the message
            log.exception("could not hold the leases of a received message")

    @app.task(name=EXECUTE_TASK)
    def execute(envelope: dict[str, Any]) -> None:
        executor.attempt(envelope)

    @app.task(name=EXECUTE_MANY_TASK)
    def execute_many(envelopes: list[dict[str, Any]]) -> None:
        executor.attempts(envelopes)
