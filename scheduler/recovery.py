"""Nothing accepted is lost: the SQL store is the truth, Redis is rebuilt from it when it forgets.

Run by the leading scheduler between admission rounds (same thread, so it never races its own
pops). Two kinds of lost job:
- queued in SQL but in no Redis queue: Redis restarted empty, or an api died between commit and
  push. Put back in its queue.
- admitted in SQL but with no attempt lease: its worker was killed, its message died with Redis or
  was lost on its way to a dying worker (``scheduler.waiting_dispatches``: the leases of messages still
  in the broker are extended here, so only a lost one runs out), or the scheduler died between
  admitting and sending. Back to queued with the same attempt number
  (it never recorded a result), at the front of its queue (it had its fair turn already: behind a
  tenant's backlog it would wait minutes), admitted again against the budget like any job.
A grace period keeps it away from jobs that are only between two steps of a healthy hand-off.

A row it cannot put back (written by an older version, a model no longer configured, a request that
no longer validates or cannot be serialised) is failed with the reason, and the others go on: one bad
row must never stop recovery, or the scheduler that runs it.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, select, update

from scheduler.waiting_dispatches import WaitingDispatches
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.budget import prompt_tokens
from shared.config import Settings
from shared.db.models import Job, utcnow
from shared.db.session import get_engine, session_scope
from shared.dialects import DIALECTS, chat_view
from shared.envelope import Envelope, JobSpec
from shared.errors import GatewayError, clip, is_outage
from shared.lanes import LANE_NAMES, Lane
from shared.queues import WaitingQueues
from shared.routing import RouteSpec, chain_for
from shared.schemas import ChatRequest

log = logging.getLogger("gateway.recovery")

GRACE_S = 5.0
BATCH = 500


class Recovery:
    def __init__(self, settings: Settings, queues: WaitingQueues, leases: AttemptLeases, admitter: Admitter,
                 every_s: float = 5.0, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or get_engine(settings.database_url)
        self.admitter = admitter
        self.queues = queues
        self.leases = leases
        self.waiting = WaitingDispatches(leases)
        self.every_s = every_s
        self._last = 0.0

    def maybe_run(self) -> dict[str, int] | None:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return None
        self._last = now
        return self.run_once()

    def run_once(self) -> dict[str, int]:
        extended = self.waiting.extend(self.settings.admission.dispatch_lease_s)
        cutoff = utcnow() - timedelta(seconds=GRACE_S)
        with session_scope(self.engine, readonly=True) as db:  # ids only: a row's content is read when it is put back
            queued = list(db.scalars(select(Job.id).where(Job.status == "queued", Job.created_at < cutoff)
                                     .limit(BATCH)))
            admitted = list(db.scalars(select(Job.id).where(Job.status.in_(("admitted", "running")),
                                                            Job.admitted_at < cutoff).limit(BATCH)))
        lost = self.queues.missing(queued)
        held = self.leases.held(admitted)
        requeued = sum(self._requeue(job_id) for job_id in lost)
        redispatched = sum(self._requeue(job_id, orphan=True) for job_id in admitted if job_id not in held)
        if requeued or redispatched:
            log.warning("recovery put back %d lost queued jobs and %d orphaned attempts", requeued, redispatched)
        return {"requeued": requeued, "redispatched": redispatched, "waiting_dispatches": extended}

    def _requeue(self, job_id: str, *, orphan: bool = False) -> bool:
        try:
            env = self._envelope_of(job_id)
            if env is None:
                return False  # it finished or moved on meanwhile
            env.dumps()  # what the push will do: fail here, for this job only
        except Exception as exc:  # noqa: BLE001 - any row, however malformed, fails alone
            if is_outage(exc):
                raise  # Redis or the store is down: the round is retried, the job is not at fault
            log.error("job %s cannot be re-queued and is failed: %r", job_id, exc)
            self._fail(job_id, f"cannot be re-queued: {_reason(exc)}")
            return False
        if orphan and not self._back_to_queued(job_id):
            return False  # it finished or moved on meanwhile
        self.queues.push(env, front=orphan)
        return True

    def _envelope_of(self, job_id: str) -> Envelope | None:
        with session_scope(self.engine, readonly=True) as db:
            job = db.get(Job, job_id)
            return self.envelope_of(job) if job is not None else None

    def envelope_of(self, job: Job) -> Envelope:
        """Rebuild a job's envelope from its SQL row (what Redis held is gone), checking the row as the
        api checked the request that made it (the row may be from an older version)."""
        if job.request is None:  # retention drops only finished jobs' content: never an open job's
            raise GatewayError(f"job {job.id} has no request any more")
        if job.lane not in LANE_NAMES:
            raise ValueError(f"unknown lane {job.lane!r}")
        dialect = job.dialect or "openai"
        if dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}")
        request = ChatRequest.model_validate(job.request).provider_payload() if dialect == "openai" else job.request
        view = chat_view(request, dialect)
        route = RouteSpec.from_dict(job.route) if job.route else None
        spec = JobSpec(id=job.id, tenant=job.tenant_id, feature=job.feature, lane=Lane(job.lane), model=job.model,
                       request=request, deadline=job.deadline.timestamp(), prompt_tokens=prompt_tokens(view),
                       prompt_chars=prompt_tokens(view, by_chars=True), key_id=job.key_id,
                       screening=job.screening if isinstance(job.screening, dict) else None, route=route,
                       dialect=dialect, stream=job.stream if isinstance(job.stream, dict) else None)
        chain = route.chain if route is not None else chain_for(self.settings, job.model)
        tier = min(job.escalations or 0, len(route.tiers) - 1) if route is not None else 0  # each went up one
        env = Envelope(spec, chain=chain, attempt=job.attempts + 1, tier=tier)
        self.admitter.prepare(env)
        return env

    def _back_to_queued(self, job_id: str) -> bool:
        with session_scope(self.engine) as db:
            result: Any = db.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(("admitted", "running")))
                .values(status="queued").execution_options(synchronize_session=False))
            return bool(result.rowcount == 1)

    def _fail(self, job_id: str, reason: str) -> None:
        with session_scope(self.engine) as db:
            db.execute(update(Job).where(Job.id == job_id, Job.status.in_(("queued", "admitted", "running")))
                       .values(status="failed", finished_at=utcnow(), error={"type": "invalid_job", "message": reason})
                       .execution_options(synchronize_session=False))


def _reason(exc: Exception) -> str:
    """Why a stored job cannot run, for its error record (short, and no traceback)."""
    if isinstance(exc, GatewayError):
        return exc.message
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        return f"its stored request is invalid: {where}: {clip(str(err.get('msg')), 200)}"
    return f"its stored data is unreadable ({type(exc).__name__}: {clip(str(exc), 200)})"
