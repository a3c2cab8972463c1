"""The api's view of the system, built once per process: settings, the store, Redis, the queues and
budgets, authentication, the attempt context for fast-lane calls and the dispatch to the workers.

What it does is split by job: ``accept`` (one job: admit inline or queue, ``api.accept``), ``bulk``
(a batch, all or nothing, ``api.bulk``) and the reads below (get, list, cancel, a job's latest view).
Each runs on a worker thread (sync SQLAlchemy and Redis), one hop per request.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import redis

from api.auth import Authenticator, Caller
from api.metrics import REDACTED, SCREENED
from api.streaming import StreamHub
from execution.context import AttemptContext
from shared import tracing
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.budget import prompt_tokens
from shared.config import ModelAccess, Settings
from shared.db import audit, jobs
from shared.db.ids import new_job_id
from shared.db.models import utcnow
from shared.db.session import get_engine, session_scope
from shared.db.tenants import AuthEpoch, Identity
from shared.dialects import chat_view
from shared.dispatch import Dispatch
from shared.envelope import Envelope, JobSpec
from shared.errors import GatewayError, InjectionBlocked, InvalidRequest, NotFound, SensitiveDataBlocked, echo
from shared.keys import Keys
from shared.lanes import Lane
from shared.privacy.guard import Guard, Guarded
from shared.queues import WaitingQueues
from shared.redis_conn import sync_redis
from shared.routing import AUTO, Router, RouteSpec, Wording, chain_for
from shared.schemas import JobTags
from shared.tenancy import check_feature, check_key, check_key_use, resolve_lane

View = dict[str, Any]
log = logging.getLogger("gateway.api")


class Gateway:
    def __init__(self, settings: Settings, dispatch: Dispatch, attempts: AttemptContext | None = None) -> None:
        from api.accept import Acceptor
        from api.batches import Batches
        from api.bulk import BulkAcceptor

        self.settings = settings
        self.dispatch = dispatch
        self.attempts = attempts or AttemptContext(settings)  # for the fast-lane attempts it sends itself
        self.keys = Keys(settings.key_prefix)
        self.redis = sync_redis(settings.redis_url)
        self.engine = get_engine(settings.database_url)
        self.queues = WaitingQueues(self.redis, self.keys)
        self.router = Router(settings)
        self.directory = self.attempts.directory  # one per process: the fast lane's attempts share it
        self.admitter = Admitter(settings, self.redis, self.keys, self.directory)
        self.leases = AttemptLeases(self.redis, self.keys)
        self.auth = Authenticator(settings, self.redis, self.keys, self.engine, self.directory)
        self.epoch = AuthEpoch(self.redis, self.keys)  # replaced after every change to a tenant or key
        self.fast_lane_slots = threading.BoundedSemaphore(settings.api.fast_lane_attempts or 1)
        self.privacy = Guard(settings)
        self.streams: StreamHub | None = None  # set by the app: where the fast lane's streamed attempts relay
        self.accept = Acceptor(self)
        self.bulk = BulkAcceptor(self)
        self.batches = Batches(self)  # POST /v1/batches: files of lines, each a job through ``bulk``

    def lane_for(self, caller: Caller, tags: JobTags, default: Lane, model: str) -> Lane:
        """The job's lane, decided once (``shared.tenancy``); its feature checked against the tenant's policy,
        its model and feature against the key's (``allowed_models``, ``allowed_features``)."""
        identity = caller.identity
        assert identity is not None
        check_key(identity.policy, utcnow())
        check_key_use(identity.policy, model, tags.feature)
        check_feature(self.settings, identity.tenant, tags.feature)
        return resolve_lane(self.settings, identity.tenant, tags.feature, tags.priority, default, identity.max_lane)

    def model_names(self, caller: Caller) -> list[str]:
        """What ``GET /v1/models`` lists for this caller: what its tenant's and key's policies let it use,
        and of those, what the key may ask for by name (``allowed_models``)."""
        names = self.router.names_for(caller.tenant, _key_models(caller.identity))
        policy = caller.identity.policy if caller.identity is not None else None
        if policy is not None and policy.allowed_models is not None:
            names = [n for n in names if n in policy.allowed_models]
        return names

    def envelope(self, tenant: str, feature: str, lane: Lane, model: str, request: dict[str, Any],
                 deadline_at: Callable[[float], datetime], reply_to: str | None = None, *,
                 identity: Identity | None = None, task: str | None = None, stream: bool = False,
                 count: bool = True, traceparent: str | None = None, dialect: str = "openai",
                 relay: dict[str, Any] | None = None) -> Envelope:
        """The job as accepted: screened and redacted (``guard``), its prompt counted here, once (every
        estimate after uses the count), by the tokenizer and as characters / 4, and its chain (or route)
        decided here, once (``shared.routing``): what no deployment can serve is refused. ``count`` False
        leaves the tokenizer's count for later (a batch bounds it by the characters, ``api.bulk``). Its
        vault of tokenized values rides along in memory. ``request`` is in ``dialect`` and stays so
        (``shared.dialects``): what reads it as a chat request reads its ``chat_view``. ``relay``: how its
        answer streams to the caller (``shared.schemas.relay_of``), None when it does not."""
        if model != AUTO:
            chain_for(self.settings, model)  # an unknown model is refused before the tokenizer runs
        guarded = self.guard(tenant, feature, request)
        sent = guarded.request
        view = chat_view(sent, dialect)
        chars = prompt_tokens(view, by_chars=True)
        counted = prompt_tokens(view) if count or model == AUTO else chars * 4  # the scorer reads the count
        with tracing.span("route", model=model):
            chain, route, counted = self._route(tenant, feature, lane, model, view, counted, task=task,
                                                stream=stream, identity=identity, exact=count or model == AUTO,
                                                wording=Wording(sent, dialect))
        job = JobSpec(id=new_job_id(), tenant=tenant, feature=feature, lane=lane, model=model, request=sent,
                      deadline=deadline_at(self.settings.lanes[lane].deadline_s).timestamp(), reply_to=reply_to,
                      prompt_tokens=counted, prompt_chars=chars, key_id=identity.key_id if identity else None,
                      screening=guarded.screening, traceparent=traceparent, route=route, dialect=dialect,
                      stream=relay)
        return Envelope(job, chain=chain, vault=guarded.vault or None)

    def _route(self, tenant: str, feature: str, lane: Lane, model: str, request: dict[str, Any], counted: int, *,
               task: str | None, stream: bool, identity: Identity | None,
               exact: bool, wording: Wording) -> tuple[list[str], RouteSpec | None, int]:
        """``Router.route``, and the count it used. A bound (``exact`` False) that leaves out a deployment
        the exact count might fit (the chain shrank, or nothing fits) is replaced by the exact count."""
        def route(tokens: int) -> tuple[list[str], RouteSpec | None]:
            return self.router.route(tenant=tenant, feature=feature, lane=lane, model=model, request=request,
                                     prompt_tokens=tokens, task=task, stream=stream, key=_key_models(identity),
                                     wording=wording)
        if not exact:
            with contextlib.suppress(InvalidRequest):
                chain, spec = route(counted)
                if len(chain) == len(chain_for(self.settings, model)):
                    return chain, spec, counted
            counted = prompt_tokens(request)
        return *route(counted), counted

    def guard(self, tenant: str, feature: str, request: dict[str, Any]) -> Guarded:
        """The choke point (``shared.privacy``), counted for /metrics: redactions by detector and action,
        screen verdicts."""
        try:
            guarded = self.privacy.check(tenant, feature, request)
        except SensitiveDataBlocked as exc:
            REDACTED.labels(detector=exc.detector, action="block").inc()
            raise
        except InjectionBlocked:
            SCREENED.labels(verdict="blocked").inc()
            raise
        SCREENED.labels(verdict=guarded.screened.verdict).inc()
        policy = self.privacy.policies.for_call(tenant, feature)
        for detector, count in guarded.counts.items():
            REDACTED.labels(detector=detector, action=policy.actions[detector]).inc(count)
        return guarded

    def record_refusal(self, caller: Caller, feature: str, lane: Lane, model: str, exc: GatewayError) -> None:
        """A call refused after its key was accepted, in the audit log (``call.rejected``, and why). Never
        turns the refusal into another error: a store that cannot take it is logged."""
        detector = getattr(exc, "detector", None)
        try:
            with session_scope(self.engine) as db:
                audit.append(db, tenant_id=caller.tenant, kind="call", action="call.rejected",
                             actor=f"key:{caller.key_id}", key_id=caller.key_id, feature=feature, lane=lane,
                             model=model, redactions={detector: "blocked"} if detector else None,
                             decision={"outcome": "rejected", "status": exc.status, "code": exc.code,
                                       "param": exc.param, "why": exc.message[:500]})
        except Exception as err:  # noqa: BLE001 - the caller gets its refusal whatever happens here
            log.warning("could not write the audit record of a refused call: %s", err)

    def vault_ttl_s(self, env: Envelope) -> float:
        """How long a job's vault may be needed: until its deadline, plus its longest attempt's lease."""
        longest = max(self.attempts.call_limit_s(self.settings.deployment(d)) for d in env.chain)
        return max(1.0, env.deadline - time.time()) + longest

    # -- reads -------------------------------------------------------------------------------------

    def get(self, caller: Caller, job_id: str) -> View:
        with session_scope(self.engine, readonly=True) as db:
            return jobs.job_view(jobs.get_job(db, caller.tenant, job_id))

    def views(self, caller: Caller, job_ids: list[str]) -> list[View]:
        """The tenant's jobs by id, in the order asked (one query); NotFound names one that is not its."""
        with session_scope(self.engine, readonly=True) as db:
            found = {job.id: job for job in jobs.get_jobs(db, caller.tenant, job_ids)}
            missing = next((job_id for job_id in job_ids if job_id not in found), None)
            if missing is not None:
                raise NotFound(f"job {echo(missing)} not found; check the ids returned by POST /v1/jobs",
                               param="ids")
            return [jobs.job_view(found[job_id]) for job_id in job_ids]

    def list(self, caller: Caller, *, status: str | None, feature: str | None, limit: int,
             cursor: str | None) -> View:
        with session_scope(self.engine, readonly=True) as db:
            page, next_cursor = jobs.list_jobs(db, caller.tenant, status=status, feature=feature, limit=limit,
                                               cursor=cursor)
            return {"object": "list", "data": [jobs.job_view(j) for j in page],
                    "has_more": next_cursor is not None, "next_cursor": next_cursor}

    def cancel(self, caller: Caller, job_id: str) -> View:
        """Cancel a queued job in the store, then tell the scheduler, which drops it from its queue's head
        rather than waiting for the budget it no longer needs (without Redis it is dropped all the same
        once admitted: the store refuses to admit a cancelled job)."""
        with session_scope(self.engine) as db:
            view = jobs.job_view(jobs.cancel_job(db, caller.tenant, job_id))
        with contextlib.suppress(redis.RedisError, OSError):
            self.queues.cancel([job_id])
        return view

    def view_any(self, job_id: str) -> View | None:
        with session_scope(self.engine, readonly=True) as db:
            job = jobs.get_job_any(db, job_id)
            return jobs.job_view(job) if job is not None else None


def _key_models(identity: Identity | None) -> ModelAccess | None:
    """The key's own models policy (``gateway keys create --allow-models/--deny-models``), if it has one."""
    if identity is None or (identity.allow_models is None and not identity.deny_models):
        return None
    allow = list(identity.allow_models) if identity.allow_models is not None else None
    return ModelAccess(allow=allow, deny=list(identity.deny_models))
