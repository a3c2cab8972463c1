"""Accepting a job: persist it, then admit it at once (fast lane) or queue it for the scheduler.

Runs in a worker thread (sync SQLAlchemy and Redis), one hop per request. The SQL row is written
and committed before anything reaches Redis, so an accepted job always exists in the store; if
Redis refuses the hand-off, the job is failed with the reason rather than left half-queued.

Per submit: one Redis round trip reads the auth epoch, the queues and the chain's breakers, and
takes an interactive job's attempt lease up front, for a whole attempt (given back if it is queued
after all); a key seen lately (``api.auth``) is confirmed there against the epoch (no SQL read). A
fast-lane job is then reserved (one round trip), under an id chosen up front, and inserted already
admitted (one statement).

A fast-lane job whose caller waits is then sent by the api itself, on the request's thread, while
it has a free slot (``api.fast_lane_attempts`` per process): the same attempt a worker would run
(``execution.attempt.run_inline``: call, record, settlement), minus the Celery hand-off, the lease
claim and the completion signal, which cost the caller ~3 ms. Its guarantees are the worker's: the
job row and the lease exist before the call, so an api killed mid-call leaves a lease that expires
and a job recovery sends again; a retry goes back to the scheduler and a worker like any
other. Without a free slot, or without a waiting caller, the job goes to a Celery worker.

A bulk submit (``submit_many``) pays per batch what a submit pays per job: two Redis round trips
before, one SQL transaction (one SELECT of the idempotency keys, one executemany INSERT) and one
Redis pipeline after; per item only the token estimate and the envelope are built.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from api.auth import Authenticator, Caller
from execution.attempt import run_inline
from execution.context import AttemptContext
from shared.admission import Admitter, QueueState
from shared.attempt_leases import AttemptLeases
from shared.budget import prompt_tokens
from shared.config import Settings
from shared.db import jobs
from shared.db.ids import new_job_id
from shared.db.session import session_scope
from shared.dispatch import Dispatch
from shared.envelope import Envelope, JobSpec
from shared.errors import GatewayError, InvalidRequest, Overloaded, PermissionDenied, Unavailable, echo
from shared.keys import Keys
from shared.lanes import Lane
from shared.queues import WaitingQueues
from shared.redis_batch import RedisBatch
from shared.redis_conn import sync_redis
from shared.routing import chain_for
from shared.schemas import ChatRequest, JobRequest, JobTags
from shared.tenancy import check_feature, resolve_lane

log = logging.getLogger("gateway.api")


@dataclass
class Submitted:
    view: dict[str, Any]
    created: bool
    sent_by_api: bool = False  # the api ran the first attempt itself (``view`` is its outcome)


@dataclass
class BatchSubmitted:
    views: list[dict[str, Any]]  # in the order of the batch's items
    created: int  # how many of them are new (the rest repeat an idempotency key)


@dataclass
class _Ahead:
    """What one round trip before admission tells the api about a job (see ``Gateway._read_ahead``)."""

    epoch: str
    queues: QueueState
    breakers: dict[str, Any]


class Gateway:
    """The api's view of the system: settings, the store and the queues."""

    def __init__(self, settings: Settings, dispatch: Dispatch, attempts: AttemptContext | None = None) -> None:
        self.settings = settings
        self.dispatch = dispatch
        self.attempts = attempts or AttemptContext(settings)  # for the fast-lane attempts it sends itself
        self.keys = Keys(settings.key_prefix)
        self.redis = sync_redis(settings.redis_url)
        self.queues = WaitingQueues(self.redis, self.keys)
        self.admitter = Admitter(settings, self.redis, self.keys)
        self.leases = AttemptLeases(self.redis, self.keys)
        self.auth = Authenticator(settings, self.redis, self.keys)
        self.attempt_slots = threading.BoundedSemaphore(settings.api.fast_lane_attempts or 1)

    def lane_for(self, caller: Caller, tags: JobTags, default: Lane) -> Lane:
        """The job's lane, decided once (``shared.tenancy``); its feature checked against the tenant's policy."""
        identity = caller.identity
        assert identity is not None
        check_feature(self.settings, identity.tenant, tags.feature)
        return resolve_lane(self.settings, identity.tenant, tags.feature, tags.priority, default, identity.max_lane)

    def _read_ahead(self, caller: Caller, env: Envelope, may_send_here: bool) -> _Ahead:
        """One round trip before admission: the auth epoch, the queues, the chain's breakers and, for an
        interactive job (likely admitted inline), its attempt lease taken up front under a new token.
        A caller taken from the key cache is confirmed against the epoch read here."""
        got: dict[str, Any] = {}
        batch = RedisBatch(self.redis)
        batch.command(lambda pipe: pipe.get(self.auth.epoch_key), lambda r: got.__setitem__("epoch", r[0] or ""))
        batch.command(lambda pipe: QueueState.queue_reads(pipe, self.keys, env.lane, env.tenant),
                      lambda r: got.__setitem__("queues", QueueState.parse(r)))
        batch.script(self.admitter.breakers.states_call(list(env.chain)), lambda b: got.__setitem__("breakers", b))
        if env.lane == Lane.INTERACTIVE:
            # When the api may send it itself (a caller waits), long enough for the whole attempt on
            # any deployment of the chain, since that path has no claim step; a worker that gets the
            # job instead (no free slot) claims it as usual.
            lease_s = (max(self.attempts.lease_s(self.settings.deployment(d)) for d in env.chain)
                       if may_send_here else self.settings.admission.dispatch_lease_s)
            batch.command(lambda pipe: self.leases.grant_in(pipe, env, lease_s))
        try:
            batch.execute()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc
        if caller.epoch != got["epoch"]:  # from the cache, or a key was revoked since: confirm it
            self.auth.saw_epoch(got["epoch"])
            try:
                self.auth.confirm(caller.api_key, got["epoch"])
            except GatewayError:
                self._drop_lease(env)
                raise
        return _Ahead(got["epoch"], got["queues"], got["breakers"])

    def _drop_lease(self, env: Envelope) -> None:
        """Give up a lease taken up front for a job that was not admitted inline after all."""
        if env.token:
            with contextlib.suppress(redis.RedisError, OSError):  # else it expires with its TTL
                self.leases.release(env)
            env.token = ""

    # -- jobs --------------------------------------------------------------------------------------

    def submit(self, caller: Caller, chat: ChatRequest, tags: JobTags, lane: Lane, reply_to: str | None,
               answer: Callable[[Submitted], None] | None = None) -> Submitted:
        """Validate against the budgets, then admit inline (fast lane) and persist, or persist and queue.
        ``lane`` comes from ``lane_for``. A job the api sends itself (``_send_here``) is handed to
        ``answer`` as soon as its attempt is recorded, before the attempt's last round trip; the return
        value is the same."""
        env = self._envelope(caller.tenant, tags.feature, lane, chat.model, chat.provider_payload(), tags.deadline_at,
                             reply_to=reply_to)
        estimate = self.admitter.prepare(env).total  # a job that can never fit is refused here, never queued
        may_send_here = bool(reply_to) and self.settings.api.fast_lane_attempts > 0
        ahead = self._read_ahead(caller, env, may_send_here)
        fast = lane == Lane.INTERACTIVE and ahead.queues.interactive_waiting == 0
        try:
            if not fast:
                self.admitter.check_queue(env, ahead.queues)  # 429 with Retry-After when it can't make it
            fast = fast and self.admitter.try_admit(env, breakers=ahead.breakers).ok
        except BaseException:
            self._drop_lease(env)
            raise
        if not fast:
            self._drop_lease(env)
        try:
            view, created = self._persist(env, tags, estimate, fast, caller)
        except BaseException:
            if fast:
                self.admitter.withdraw(env)
                self._drop_lease(env)
            raise
        if not created:
            if fast:
                self.admitter.withdraw(env)
                self._drop_lease(env)
            return Submitted(view, created=False)
        env.enqueued_at = time.time()
        if fast and reply_to and self._take_attempt_slot():
            return self._send_here(env, view, answer)
        self._hand_off(env, fast)
        return Submitted(view, created=True)

    def _envelope(self, tenant: str, feature: str, lane: Lane, model: str, request: dict[str, Any],
                  deadline_at: Callable[[float], datetime], reply_to: str | None = None) -> Envelope:
        """The job as accepted: its prompt counted here, once (every estimate after uses the count)."""
        chain = chain_for(self.settings, model)  # an unknown model is refused before the tokenizer runs
        job = JobSpec(id=new_job_id(), tenant=tenant, feature=feature, lane=lane, model=model, request=request,
                      deadline=deadline_at(self.settings.lanes[lane].deadline_s).timestamp(), reply_to=reply_to,
                      prompt_tokens=prompt_tokens(request))
        return Envelope(job, chain=chain)

    def _take_attempt_slot(self) -> bool:
        return self.settings.api.fast_lane_attempts > 0 and self.attempt_slots.acquire(blocking=False)

    def _send_here(self, env: Envelope, view: dict[str, Any],
                   answer: Callable[[Submitted], None] | None) -> Submitted:
        """Run the admitted job's attempt on this thread (its lease taken by ``_read_ahead``). An
        attempt that breaks here (the store or Redis failing) is recovery's once its lease
        expires, as when a worker dies; the caller's wait then reads the store."""
        done: list[Submitted] = []

        def deliver(latest: dict[str, Any]) -> None:
            done.append(Submitted(latest, created=True, sent_by_api=True))
            if answer is not None:
                answer(done[0])

        try:
            run_inline(env, self.attempts, deliver)
        except Exception:
            log.exception("attempt %s of job %s failed in the api; recovery will send it again",
                          env.attempt, env.id)
        finally:
            self.attempt_slots.release()
        return done[0] if done else Submitted(view, created=True)

    def _persist(self, env: Envelope, tags: JobTags, estimate: int, admitted: bool,
                 caller: Caller) -> tuple[dict[str, Any], bool]:
        """Insert the job (admitted already, its lease held, when reserved inline); a repeated
        idempotency key returns the original job instead (``created`` False)."""
        with session_scope() as db:
            job, created = jobs.create_job(
                db, tenant_id=env.tenant, feature=env.feature, lane=env.lane, task=tags.task, model=env.model,
                request=env.request, deadline=datetime.fromtimestamp(env.deadline, UTC),
                idempotency_key=tags.idempotency_key, estimate_tokens=estimate, job_id=env.id,
                admitted_deployment=env.deployment if admitted else None,
                key_id=caller.identity.key_id if caller.identity else None,
            )
            return jobs.job_view(job), created

    def _hand_off(self, env: Envelope, fast: bool) -> None:
        try:
            if fast:
                self.dispatch.send(env)
            else:
                self.queues.push(env)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue job %s: %s", env.id, exc)
            with session_scope() as db:
                jobs.complete_job(db, env.id, status="failed",
                                  error={"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc

    # -- bulk jobs ---------------------------------------------------------------------------------

    def submit_many(self, caller: Caller, items: Sequence[JobRequest]) -> BatchSubmitted:
        """Accept a batch all or nothing: every item is checked, and the batch shed as a whole, before
        anything is written. Every new job is queued for the scheduler, even an interactive one."""
        _refuse_repeated_keys(items)
        tenant = caller.tenant
        envs = [self._bulk_envelope(caller, index, item) for index, item in enumerate(items)]
        self._shed_batch(tenant, envs, self._queue_states(tenant, {env.lane for env in envs}))
        key_id = caller.identity.key_id if caller.identity else None
        rows = [jobs.NewJob(env.id, env.feature, env.lane, item.task, env.model, env.request,
                            datetime.fromtimestamp(env.deadline, UTC), item.idempotency_key, env.tokens, key_id)
                for env, item in zip(envs, items, strict=True)]
        with session_scope() as db:
            results = jobs.create_jobs(db, tenant, rows)
        created = [env for env, (_, new) in zip(envs, results, strict=True) if new]
        enqueued_at = time.time()
        for env in created:
            env.enqueued_at = enqueued_at
        self._hand_off_many(created)
        return BatchSubmitted([view for view, _ in results], len(created))

    def _bulk_envelope(self, caller: Caller, index: int, item: JobRequest) -> Envelope:
        """The item's envelope with its estimate (``prepare``, once); errors name the item."""
        try:
            tags = item.tags()
            lane = self.lane_for(caller, tags, Lane.STANDARD)
            env = self._envelope(caller.tenant, tags.feature, lane, item.model, item.payload(), tags.deadline_at)
            self.admitter.prepare(env)
        except (InvalidRequest, Overloaded, PermissionDenied) as exc:
            raise _for_item(index, exc) from exc
        return env

    def _queue_states(self, tenant: str, lanes: Iterable[str]) -> dict[str, QueueState]:
        """The tenant's queues in each of ``lanes``, read in one round trip."""
        spans = []
        try:
            with self.redis.pipeline(transaction=False) as pipe:
                for lane in lanes:
                    start = len(pipe)
                    QueueState.queue_reads(pipe, self.keys, lane, tenant)
                    spans.append((lane, start, len(pipe)))
                replies = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable("The gateway's queue (Redis) is unavailable; the jobs were not accepted. "
                              "Retry shortly.") from exc
        return {lane: QueueState.parse(replies[start:end]) for lane, start, end in spans}

    def _shed_batch(self, tenant: str, envs: list[Envelope], queues: dict[str, QueueState]) -> None:
        """429 for the whole batch unless all of it fits: the tenant's queue cap counts every job of
        the batch, and each job must start before its deadline behind the work ahead of it there,
        the batch's own jobs included (its earlier jobs in the lane, all of it in lanes above)."""
        if not self.settings.admission.enabled:
            return
        per_lane = Counter(env.lane for env in envs)
        for lane, count in per_lane.items():
            self._check_room(tenant, lane, count, queues[lane], next(e for e in envs if e.lane == lane))
        batch_tokens: Counter[str] = Counter()
        for env in envs:
            batch_tokens[env.lane] += env.tokens
        earlier: Counter[str] = Counter()
        for index, env in enumerate(envs):
            above = sum(batch_tokens[lane] for lane in Lane(env.lane).and_above() if lane != env.lane)
            state = queues[env.lane]
            ahead = QueueState(state.interactive_waiting, state.depth, state.tokens_ahead + above + earlier[env.lane])
            try:
                self.admitter.check_queue(env, ahead)
            except Overloaded as exc:
                raise _for_item(index, exc) from exc
            earlier[env.lane] += env.tokens

    def _check_room(self, tenant: str, lane: str, count: int, state: QueueState, sample: Envelope) -> None:
        """``check_queue``'s queue cap for ``count`` jobs at once (its Retry-After, too)."""
        cap = self.settings.lanes[lane].max_queue_per_tenant  # type: ignore[index]
        if state.depth + count <= cap:
            return
        rate = self.admitter.token_rate(sample)
        retry_after = max(1.0, state.tokens_ahead / rate) if rate else 60.0
        raise Overloaded(
            f"Tenant {tenant!r} has {state.depth} jobs waiting in the {lane} lane and this batch adds {count}, "
            f"over the limit of {cap}; nothing was queued. Retry after {retry_after:.0f}s, or send at most "
            f"{max(0, cap - state.depth)} jobs for this lane.", retry_after=retry_after, code="queue_full",
            param="jobs")

    def _hand_off_many(self, envs: list[Envelope]) -> None:
        """Push the committed jobs in one pipeline; if Redis refuses, fail them all (one UPDATE)."""
        try:
            self.queues.push_many(envs)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue %d jobs of a batch: %s", len(envs), exc)
            with session_scope() as db:
                jobs.fail_jobs(db, [env.id for env in envs], {"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the jobs were not accepted. "
                              "Retry shortly.") from exc

    def get(self, caller: Caller, job_id: str) -> dict[str, Any]:
        with session_scope(readonly=True) as db:
            return jobs.job_view(jobs.get_job(db, caller.tenant, job_id))

    def list(self, caller: Caller, *, status: str | None, feature: str | None, limit: int,
             cursor: str | None) -> dict[str, Any]:
        with session_scope(readonly=True) as db:
            page, next_cursor = jobs.list_jobs(db, caller.tenant, status=status, feature=feature, limit=limit,
                                               cursor=cursor)
            return {"object": "list", "data": [jobs.job_view(j) for j in page],
                    "has_more": next_cursor is not None, "next_cursor": next_cursor}

    def cancel(self, caller: Caller, job_id: str) -> dict[str, Any]:
        with session_scope() as db:
            return jobs.job_view(jobs.cancel_job(db, caller.tenant, job_id))

    def view_any(self, job_id: str) -> dict[str, Any] | None:
        with session_scope(readonly=True) as db:
            job = jobs.get_job_any(db, job_id)
            return jobs.job_view(job) if job is not None else None


def _refuse_repeated_keys(items: Sequence[JobRequest]) -> None:
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        key = item.idempotency_key
        if key is None:
            continue
        if key in first:
            raise InvalidRequest(
                f"jobs.{index}.idempotency_key: {echo(key)} is also the key of jobs.{first[key]}; every job of "
                "a batch needs its own key. Nothing of this batch was accepted.",
                param=f"jobs.{index}.idempotency_key")
        first[key] = index


def _for_item(index: int, exc: InvalidRequest | Overloaded | PermissionDenied) -> GatewayError:
    """The error of one item, naming it (``jobs.<i>``): what refuses one job refuses its batch. A bad
    item is a 400 whatever its single-job status (an unknown model is a 404 on ``POST /v1/jobs``)."""
    param = f"jobs.{index}.{exc.param}" if exc.param else f"jobs.{index}"
    message = f"{param}: {exc.message} Nothing of this batch was accepted."
    if isinstance(exc, Overloaded):
        return Overloaded(message, retry_after=exc.retry_after, code=exc.code, param=param)
    if isinstance(exc, PermissionDenied):
        return PermissionDenied(message, param=param, code=exc.code)
    return InvalidRequest(message, param=param, code=exc.code)
