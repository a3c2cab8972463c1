"""Nothing accepted is lost: the SQL store is the truth, Redis is rebuilt from it when it forgets.

Run by the leading scheduler between admission rounds (same thread, so it never races its own
pops). Two kinds of lost job:
- queued in SQL but in no Redis queue: Redis restarted empty, or an api died between commit and
  push. Put back in its queue.
- admitted in SQL but with no attempt lease: its worker was killed, its message died with Redis,
  or the scheduler died between admitting and sending. Back to queued with the same attempt number
  (it never recorded a result), admitted again against the budget like any job.
A grace period keeps it away from jobs that are only between two steps of a healthy hand-off.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update

from shared.config import Settings
from shared.db.models import Job, utcnow
from shared.db.session import session_scope
from shared.errors import GatewayError
from shared.leases import AttemptLeases
from shared.queues import Envelope, WaitingQueues
from shared.routing import chain_for

log = logging.getLogger("gateway.reconciler")

GRACE_S = 5.0
BATCH = 500


class Reconciler:
    def __init__(self, settings: Settings, queues: WaitingQueues, leases: AttemptLeases,
                 every_s: float = 5.0) -> None:
        self.settings = settings
        self.queues = queues
        self.leases = leases
        self.every_s = every_s
        self._last = 0.0

    def maybe_run(self) -> dict[str, int] | None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return None
        self._last = now
        return self.run_once()

    def run_once(self) -> dict[str, int]:
        cutoff = utcnow() - timedelta(seconds=GRACE_S)
        with session_scope(readonly=True) as db:
            queued = db.scalars(select(Job).where(Job.status == "queued", Job.created_at < cutoff).limit(BATCH)).all()
            admitted = db.scalars(select(Job).where(Job.status.in_(("admitted", "running")),
                                                    Job.admitted_at < cutoff).limit(BATCH)).all()
        lost = set(self.queues.missing([j.id for j in queued]))
        held = self.leases.held([j.id for j in admitted])
        orphans = [j for j in admitted if j.id not in held]
        requeued = sum(self._requeue(job) for job in queued if job.id in lost)
        redispatched = sum(self._requeue(job, orphan=True) for job in orphans)
        if requeued or redispatched:
            log.warning("reconciler put back %d lost queued jobs and %d orphaned attempts", requeued, redispatched)
        return {"requeued": requeued, "redispatched": redispatched}

    def _requeue(self, job: Job, *, orphan: bool = False) -> bool:
        try:
            env = self.envelope_of(job)
        except GatewayError as exc:  # its model left the config: it can't run any more
            self._fail(job.id, f"cannot be re-queued: {exc.message}")
            return False
        if orphan and not self._back_to_queued(job.id):
            return False  # it finished or moved on meanwhile
        self.queues.push(env)
        return True

    def envelope_of(self, job: Job) -> Envelope:
        """Rebuild a job's envelope from its SQL row (what Redis held is gone)."""
        if job.request is None:  # retention drops only finished jobs' content: never an open job's
            raise GatewayError(f"job {job.id} has no request any more")
        return Envelope(
            id=job.id, tenant=job.tenant_id, feature=job.feature, lane=job.lane, model=job.model,
            chain=chain_for(self.settings, job.model), request=job.request, deadline=job.deadline.timestamp(),
            attempt=job.attempts + 1, estimate=job.estimate_tokens or 0,
        )

    def _back_to_queued(self, job_id: str) -> bool:
        with session_scope() as db:
            result: Any = db.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(("admitted", "running")))
                .values(status="queued").execution_options(synchronize_session=False))
            return bool(result.rowcount == 1)

    def _fail(self, job_id: str, reason: str) -> None:
        with session_scope() as db:
            db.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "admitted", "running")))
                       .values(status="failed", finished_at=utcnow(), error={"type": "lost", "message": reason})
                       .execution_options(synchronize_session=False))
