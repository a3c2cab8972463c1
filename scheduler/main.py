"""The scheduler process: admits waiting jobs when their estimate fits the budget tree.

It holds the leader lease and sleeps on the wake list (arrivals and refunds push to it) or until the
first blocked bucket will have refilled, never on a fixed poll. Each round picks fairly
(``scheduler.fair_queuing``), reserves in Redis, then one SQL transaction marks the batch admitted (a job
cancelled meanwhile is skipped by the conditional update and its reservation released), and each
admitted envelope goes to its lane's execution queue.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import redis
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from scheduler.fair_queuing import FairQueuing, Round
from scheduler.leader import LeaderLease
from scheduler.recovery import Recovery
from shared import tracing
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.config import Settings
from shared.db import audit, jobs, retention
from shared.db.models import Job, utcnow
from shared.db.session import get_engine, session_scope
from shared.directory import Directory
from shared.dispatch import Dispatch
from shared.envelope import Envelope, Unreadable
from shared.keys import Keys
from shared.queues import WaitingQueues
from shared.redis_conn import sync_redis
from shared.signals import announce, announce_end

log = logging.getLogger("gateway.scheduler")

BATCH = 256
SWEEP_EVERY_S = 2.0
PURGE_EVERY_S = 60.0  # retention; every sweep instead while a backlog lasts


class Scheduler:
    def __init__(self, settings: Settings, dispatch: Dispatch, instance: str | None = None) -> None:
        self.settings = settings
        self.dispatch = dispatch
        self.keys = Keys(self.settings.key_prefix)
        self.redis = sync_redis(self.settings.redis_url)
        self.queues = WaitingQueues(self.redis, self.keys)
        self.instance = instance or f"scheduler-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.lease = LeaderLease(self.redis, self.keys.leader, self.instance, settings.scheduler.leader_lease_s)
        self.engine = get_engine(settings.database_url)
        self.directory = Directory(settings, self.engine, self.redis, self.keys)
        self.admitter = Admitter(self.settings, self.redis, self.keys, self.directory)
        self.fair_queuing = FairQueuing(self.settings, self.admitter, self.queues)
        self.leases = AttemptLeases(self.redis, self.keys)
        self.recovery = Recovery(self.settings, self.queues, self.leases, self.admitter,
                                 every_s=self.settings.admission.reconcile_every_s, engine=self.engine)
        self._last_sweep = 0.0
        self._next_purge = 0.0
        self._quiet = False  # the last round found nothing waiting, and nothing woke the scheduler since
        self._renewed = False  # the lease was renewed by a wait that nothing interrupted: no hold needed

    def run(self, stop: threading.Event) -> None:
        log.info("scheduler %s started", self.instance)
        leading = False
        while not stop.is_set():
            try:
                leading = self._lead_once(leading, stop)
            except (redis.RedisError, SQLAlchemyError) as exc:  # Redis restarting, database busy: carry on
                log.warning("scheduler round failed (%s); retrying in 1s", exc)
                leading = False
                stop.wait(1.0)
            except Exception:  # a bug must not stop admission for every tenant: log it loudly, go on
                log.exception("scheduler round failed unexpectedly; retrying in 1s")
                leading = False
                stop.wait(1.0)
        with contextlib.suppress(redis.RedisError):
            self.lease.release()

    def _lead_once(self, leading: bool, stop: threading.Event) -> bool:
        renewed, self._renewed = self._renewed, False
        if not (renewed and self.lease.still_valid()) and not self.lease.hold():
            if leading:
                log.warning("scheduler %s lost the leader lease", self.instance)
            stop.wait(min(self.lease.holder_left_s + 0.005, self.settings.scheduler.leader_lease_s))
            return False
        if not leading:
            log.info("scheduler %s is the leader", self.instance)
        result = self.step()
        if not result.admitted and not result.expired:
            self._wait(min(result.wake_in, self.lease.longest_wait_s), quiet=result.quiet)
        return True

    def _wait(self, timeout_s: float, *, quiet: bool) -> None:
        """Sleep until there is work (an arrival or a refund wakes it) or ``timeout_s`` passed, renewing
        the leader lease in the same round trip. When the round found nothing waiting and nothing
        woke it, the next round is skipped (every push and refund wakes it): an idle leader costs one
        round trip a wait, plus the sweep's and recovery's every few seconds."""
        with self.redis.pipeline(transaction=False) as pipe:
            sent = self.lease.hold_in(pipe)
            self.queues.wait_for_wake_in(pipe, max(timeout_s, 0.001))
            held, woken = pipe.execute(raise_on_error=False)
        self._renewed = self.lease.took(held, sent) and woken is None
        if isinstance(woken, Exception):
            raise woken
        self._quiet = quiet and woken is None

    def step(self) -> Round:
        """Run one admission round: reserve, record, send. Returns what it did."""
        if not self.lease.still_valid():
            return Round()
        self._sweep()
        self.recovery.maybe_run()
        if self._quiet:  # nothing waited last time and nothing was pushed since: no round to run
            return Round(quiet=True)
        result = self.fair_queuing.run_round(BATCH, time.time())  # promotes due retries first
        for env, until in result.parked:  # a dollar budget's reset; popped already (recovery covers a crash here)
            self.queues.delay(dataclasses.replace(env, not_before=until))
        if result.admitted or result.expired or result.failed or result.refused:  # an empty round writes nothing
            self.dispatch.send_many(self.record(result))
        return result

    def record(self, result: Round) -> list[Envelope]:
        """Mark admissions and expiries in SQL in one transaction; returns the envelopes to send."""
        now = time.time()
        to_send: list[Envelope] = []
        ended: list[tuple[Envelope | Unreadable, dict[str, Any] | None]] = []
        self.leases.grant(result.admitted, self.settings.admission.dispatch_lease_s)
        with session_scope(self.engine) as db:
            for env, reason in result.expired:
                if jobs.expire_job(db, env.id, reason):
                    job = jobs.get_job_any(db, env.id)
                    ended.append((env, jobs.job_view(job) if job else None))
            for bad, reason in result.failed:
                log.error("job %s cannot run and is failed: %s", bad.id or "(unknown id)", reason)
                if bad.id and jobs.complete_job(db, bad.id, status="failed",
                                                error={"type": "invalid_job", "message": reason}):
                    job = jobs.get_job_any(db, bad.id)
                    ended.append((bad, jobs.job_view(job) if job else None))
            for env, reason in result.refused:  # a hard dollar budget, and no time to wait for its reset
                if jobs.complete_job(db, env.id, status="failed",
                                     error={"type": "insufficient_quota", "message": reason}):
                    job = jobs.get_job_any(db, env.id)
                    ended.append((env, jobs.job_view(job) if job else None))
            admitted = jobs.mark_admitted_many(db, [
                (env.id, env.deployment or env.chain[0], int((now - env.enqueued_at) * 1000))
                for env in result.admitted])
        for env in result.admitted:
            if env.id in admitted:
                to_send.append(env)
                if tracing.enabled():
                    tracing.record("admission", env.job.traceparent, env.enqueued_at, now, lane=str(env.lane),
                                   tenant=env.tenant, feature=env.feature, deployment=env.deployment, inline=False)
            else:  # cancelled or expired meanwhile: give its reservation back at once
                self.admitter.store.release(self.admitter.reservation_id(env))
        for entry, view in ended:
            if view:
                announce(self.redis, entry.reply_to, view)
                announce_end(self.redis, self.keys, view["tenant"], view["id"], view["status"])
        return to_send

    def _sweep(self) -> None:
        """Now and then: drop unreported reservations, expire jobs overdue deep in their queues, seal new
        audit records into their tenants' chains, purge old finished jobs and audit content."""
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        self.admitter.store.expire()
        with session_scope(self.engine) as db:
            db.execute(
                update(Job)
                .where(Job.status == "queued", Job.deadline < utcnow())
                .values(status="expired", finished_at=utcnow(),
                        error={"type": "deadline_exceeded", "message": "deadline passed while waiting for admission"})
                .execution_options(synchronize_session=False)
            )
        self._seal()
        self._purge(now)

    def _seal(self) -> None:
        """The audit log's chains (``shared.db.audit.seal``), a batch a sweep; a failure (a standby that
        led a moment ago sealing the same records) is logged and tried again next sweep."""
        try:
            audit.seal(self.engine)
        except SQLAlchemyError as exc:
            log.warning("audit sealing failed (%s); next try in %.0fs", exc, SWEEP_EVERY_S)

    def _purge(self, now: float) -> None:
        """Retention (``shared.db.retention``): one bounded batch a minute, or a sweep's while a backlog
        lasts. Its failure is logged, never let stop admission."""
        if now < self._next_purge:
            return
        self._next_purge = now + PURGE_EVERY_S
        try:
            done = retention.purge(self.settings.retention, engine=self.engine)
            audit_purged = audit.purge_content(self.engine)
        except SQLAlchemyError as exc:
            log.warning("retention purge failed (%s); next try in %.0fs", exc, PURGE_EVERY_S)
            return
        if done.more or audit_purged == audit.BATCH_ROWS:
            self._next_purge = now + SWEEP_EVERY_S
        if audit_purged:
            log.info("retention: dropped the content of %d audit records", audit_purged)
        if done.blanked or done.deleted or done.rollups:
            log.info("retention: dropped the content of %d finished jobs, deleted %d, and %d usage rollup rows",
                     done.blanked, done.deleted, done.rollups)


def run_scheduler(settings: Settings, dispatch: Dispatch) -> None:
    stop = threading.Event()
    try:
        Scheduler(settings, dispatch).run(stop)
    except KeyboardInterrupt:
        stop.set()
