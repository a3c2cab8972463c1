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

from shared import tokens
from shared.config import Lane, Settings
from shared.db import jobs
from shared.db.session import session_scope
from shared.db.tenants import authenticate
from shared.errors import GatewayError
from shared.keys import Keys
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

    def tenant_for(self, api_key: str) -> str:
        with session_scope(readonly=True) as db:
            return authenticate(db, api_key)

    def submit(self, api_key: str, chat: ChatRequest, tags: JobTags, reply_to: str | None) -> Submitted:
        tenant = self.tenant_for(api_key)
        chain = chain_for(self.settings, chat.model)
        lane = self.settings.lane_for(tenant, tags.feature, tags.priority)
        first = self.settings.deployment(chain[0])
        request = chat.provider_payload()
        estimate = tokens.count_message_tokens(request["messages"]) + (chat.output_cap()
                                                                      or first.default_max_tokens)
        fast = lane == "interactive" and self.queues.waiting_in_lane("interactive") == 0
        with session_scope() as db:
            job, created = jobs.create_job(
                db, tenant_id=tenant, feature=tags.feature, lane=lane, task=tags.task, model=chat.model,
                request=request, deadline=tags.deadline_at(self.settings.lanes[lane].deadline_s),
                idempotency_key=tags.idempotency_key, estimate_tokens=estimate,
            )
            if not created:
                return Submitted(jobs.job_view(job), created=False)
            if fast:
                job.status, job.admitted_at, job.deployment, job.queued_ms = (
                    "admitted", datetime.now(UTC), chain[0], 0)
            db.flush()
            env = self._envelope(job, tenant, lane, chain, request, estimate, reply_to)
            view = jobs.job_view(job)
        self._hand_off(env, fast)
        return Submitted(view, created=True)

    def _envelope(self, job: Any, tenant: str, lane: Lane, chain: list[str], request: dict[str, Any],
                  estimate: int, reply_to: str | None) -> Envelope:
        return Envelope(
            id=job.id, tenant=tenant, feature=job.feature, lane=lane, model=job.model, chain=chain,
            request=request, deadline=job.deadline.timestamp(), enqueued_at=time.time(),
            estimate=estimate, deployment=job.deployment, reply_to=reply_to,
        )

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
