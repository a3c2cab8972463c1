"""The api's view of the system, built once per process: settings, the store, Redis, the queues and
budgets, authentication, the attempt context for fast-lane calls and the dispatch to the workers.

What it does is split by job: ``accept`` (one job: admit inline or queue, ``api.accept``), ``bulk``
(a batch, all or nothing, ``api.bulk``) and the reads below (get, list, cancel, a job's latest view).
Each runs on a worker thread (sync SQLAlchemy and Redis), one hop per request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from api.auth import Authenticator, Caller
from execution.context import AttemptContext
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.budget import prompt_tokens
from shared.config import Settings
from shared.db import jobs
from shared.db.ids import new_job_id
from shared.db.session import get_engine, session_scope
from shared.dispatch import Dispatch
from shared.envelope import Envelope, JobSpec
from shared.keys import Keys
from shared.lanes import Lane
from shared.queues import WaitingQueues
from shared.redis_conn import sync_redis
from shared.routing import chain_for
from shared.schemas import JobTags
from shared.tenancy import check_feature, resolve_lane

View = dict[str, Any]


class Gateway:
    def __init__(self, settings: Settings, dispatch: Dispatch, attempts: AttemptContext | None = None) -> None:
        from api.accept import Acceptor
        from api.bulk import BulkAcceptor

        self.settings = settings
        self.dispatch = dispatch
        self.attempts = attempts or AttemptContext(settings)  # for the fast-lane attempts it sends itself
        self.keys = Keys(settings.key_prefix)
        self.redis = sync_redis(settings.redis_url)
        self.engine = get_engine(settings.database_url)
        self.queues = WaitingQueues(self.redis, self.keys)
        self.admitter = Admitter(settings, self.redis, self.keys)
        self.leases = AttemptLeases(self.redis, self.keys)
        self.auth = Authenticator(settings, self.redis, self.keys, self.engine)
        self.fast_lane_slots = threading.BoundedSemaphore(settings.api.fast_lane_attempts or 1)
        self.accept = Acceptor(self)
        self.bulk = BulkAcceptor(self)

    def lane_for(self, caller: Caller, tags: JobTags, default: Lane) -> Lane:
        """The job's lane, decided once (``shared.tenancy``); its feature checked against the tenant's policy."""
        identity = caller.identity
        assert identity is not None
        check_feature(self.settings, identity.tenant, tags.feature)
        return resolve_lane(self.settings, identity.tenant, tags.feature, tags.priority, default, identity.max_lane)

    def envelope(self, tenant: str, feature: str, lane: Lane, model: str, request: dict[str, Any],
                 deadline_at: Callable[[float], datetime], reply_to: str | None = None,
                 cache: dict[str, Any] | None = None) -> Envelope:
        """The job as accepted: its prompt counted here, once (every estimate after uses the count)."""
        chain = chain_for(self.settings, model)  # an unknown model is refused before the tokenizer runs
        job = JobSpec(id=new_job_id(), tenant=tenant, feature=feature, lane=lane, model=model, request=request,
                      deadline=deadline_at(self.settings.lanes[lane].deadline_s).timestamp(), reply_to=reply_to,
                      prompt_tokens=prompt_tokens(request), cache=cache)
        return Envelope(job, chain=chain)

    # -- reads -------------------------------------------------------------------------------------

    def get(self, caller: Caller, job_id: str) -> View:
        with session_scope(self.engine, readonly=True) as db:
            return jobs.job_view(jobs.get_job(db, caller.tenant, job_id))

    def list(self, caller: Caller, *, status: str | None, feature: str | None, limit: int,
             cursor: str | None) -> View:
        with session_scope(self.engine, readonly=True) as db:
            page, next_cursor = jobs.list_jobs(db, caller.tenant, status=status, feature=feature, limit=limit,
                                               cursor=cursor)
            return {"object": "list", "data": [jobs.job_view(j) for j in page],
                    "has_more": next_cursor is not None, "next_cursor": next_cursor}

    def cancel(self, caller: Caller, job_id: str) -> View:
        with session_scope(self.engine) as db:
            return jobs.job_view(jobs.cancel_job(db, caller.tenant, job_id))

    def view_any(self, job_id: str) -> View | None:
        with session_scope(self.engine, readonly=True) as db:
            job = jobs.get_job_any(db, job_id)
            return jobs.job_view(job) if job is not None else None
