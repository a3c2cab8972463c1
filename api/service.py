"""Accepting a job: persist it, then admit it at once (fast lane) or queue it for the scheduler.

Runs in a worker thread (sync SQLAlchemy and Redis), one hop per request. The SQL row is written
and committed before anything reaches Redis, so an accepted job always exists in the store; if
Redis refuses the hand-off, the job is failed with the reason rather than left half-queued.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from shared.admission import Admitter
from shared.config import Settings
from shared.db import jobs
from shared.db.session import session_scope
from shared.db.tenants import authenticate
from shared.errors import GatewayError
from shared.keys import Keys
from shared.leases import AttemptLeases
from shared.queues import Envelope, WaitingQueues
from shared.redis_conn import sync_redis
from shared.routing import chain_for
from shared.schemas import ChatRequest, JobTags
from worker.celery_app import send_attempt

log = logging.getLogger("gateway.api")


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "queue_unavailable"


@dataclass
class Submitted:
    view: dict[str, Any]
    created: bool


class Gateway:
    """The api's view of the system: settings, the store and the queues."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.redis = sync_redis(settings.redis_url)
        self.queues = WaitingQueues(self.redis, self.keys)
        self.admitter = Admitter(settings, self.redis, self.keys)
        self.leases = AttemptLeases(self.redis, self.keys)

    def tenant_for(self, api_key: str) -> str:
        with session_scope(readonly=True) as db:
            return authenticate(db, api_key)

    def submit(self, api_key: str, chat: ChatRequest, tags: JobTags, reply_to: str | None) -> Submitted:
        """Validate against the budgets, persist, then admit inline (fast lane) or queue."""
        tenant = self.tenant_for(api_key)
        lane = self.settings.lane_for(tenant, tags.feature, tags.priority)
        env = Envelope(
            id="", tenant=tenant, feature=tags.feature, lane=lane, model=chat.model,
            chain=chain_for(self.settings, chat.model), request=chat.provider_payload(),
            deadline=tags.deadline_at(self.settings.lanes[lane].deadline_s).timestamp(), reply_to=reply_to,
        )
        self.admitter.prepare(env)  # a job that can never fit is refused here, never queued
        fast = lane == "interactive" and self.queues.waiting_in_lane("interactive") == 0
        if not fast:
            self.admitter.check_queue(env, self.queues)  # 429 with Retry-After when it can't make it
        reserved = False
        try:
            with session_scope() as db:
                job, created = jobs.create_job(
                    db, tenant_id=tenant, feature=tags.feature, lane=lane, task=tags.task, model=chat.model,
                    request=env.request, deadline=datetime.fromtimestamp(env.deadline, UTC),
                    idempotency_key=tags.idempotency_key, estimate_tokens=env.estimate,
                )
                if not created:
                    return Submitted(jobs.job_view(job), created=False)
                env.id = job.id
                fast = reserved = fast and self.admitter.try_admit(env).ok
                if fast:
                    self.leases.grant([env], self.settings.admission.dispatch_lease_s)
                    job.status, job.admitted_at, job.deployment, job.queued_ms = (
                        "admitted", datetime.now(UTC), env.deployment, 0)
                db.flush()
                view = jobs.job_view(job)
        except BaseException:
            if reserved:
                self.admitter.store.release(self.admitter.reservation_id(env))
            raise
        env.enqueued_at = time.time()
        self._hand_off(env, fast)
        return Submitted(view, created=True)

    def _hand_off(self, env: Envelope, fast: bool) -> None:
        try:
            if fast:
                send_attempt(env)
            else:
                self.queues.push(env)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue job %s: %s", env.id, exc)
            with session_scope() as db:
                jobs.complete_job(db, env.id, status="failed",
                                  error={"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc

    def get(self, api_key: str, job_id: str) -> dict[str, Any]:
        tenant = self.tenant_for(api_key)
        with session_scope(readonly=True) as db:
            return jobs.job_view(jobs.get_job(db, tenant, job_id))

    def list(self, api_key: str, *, status: str | None, feature: str | None, limit: int,
             cursor: str | None) -> dict[str, Any]:
        tenant = self.tenant_for(api_key)
        with session_scope(readonly=True) as db:
            page, next_cursor = jobs.list_jobs(db, tenant, status=status, feature=feature, limit=limit,
                                               cursor=cursor)
            return {"object": "list", "data": [jobs.job_view(j) for j in page],
                    "has_more": next_cursor is not None, "next_cursor": next_cursor}

    def cancel(self, api_key: str, job_id: str) -> dict[str, Any]:
        tenant = self.tenant_for(api_key)
        with session_scope() as db:
            return jobs.job_view(jobs.cancel_job(db, tenant, job_id))

    def view_any(self, job_id: str) -> dict[str, Any] | None:
        with session_scope(readonly=True) as db:
            job = jobs.get_job_any(db, job_id)
            return jobs.job_view(job) if job is not None else None
