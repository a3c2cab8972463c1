"""Accepting one job: answer it from the cache, or persist it, then admit it at once (fast lane) or queue
it for the scheduler.

The cache is asked first, after the lane is decided and before any budget is touched
(``shared.cache``): a hit costs one Redis round trip and a job row written just after the caller is
answered; a miss costs that round trip and goes on as below, carrying where its answer is to be stored.

The SQL row is written and committed before anything reaches Redis, so an accepted job always exists
in the store; if Redis refuses the hand-off, the job is failed with the reason rather than left
half-queued.

Per submit: one Redis round trip reads the auth epoch, the queues and the chain's breakers, and
takes an interactive job's attempt lease up front, for a whole attempt (given back if it is queued
after all); a key seen lately (``api.auth``) is confirmed there against the epoch (no SQL read). A
fast-lane job is then reserved (one round trip), under an id chosen up front, and inserted already
admitted (one statement). What a submit that stops half-way took (the lease, the reservation) is
given back by one ``ExitStack``.

A fast-lane job whose caller waits is then sent by the api itself, on the request's thread, while
it has a free slot (``api.fast_lane_attempts`` per process): the same attempt a worker would run
(``execution.attempt.run_inline``: call, record, settlement), minus the Celery hand-off, the lease
claim and the completion signal, which cost the caller ~3 ms. Its guarantees are the worker's: the
job row and the lease exist before the call, so an api killed mid-call leaves a lease that expires
and a job recovery sends again; a retry goes back to the scheduler and a worker like any
other. Without a free slot, or without a waiting caller, the job goes to a Celery worker.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from api.auth import Caller
from api.metrics import CACHE_BYPASSED
from execution.attempt import run_inline
from shared.admission import QueueState
from shared.cache.plan import CachePlan, plan_for
from shared.cache.store import Hit
from shared.db import jobs
from shared.db.ids import new_job_id
from shared.db.models import utcnow
from shared.db.session import session_scope
from shared.envelope import Envelope
from shared.errors import GatewayError, Unavailable
from shared.lanes import Lane
from shared.redis_batch import RedisBatch
from shared.routing import chain_for
from shared.schemas import ChatRequest, JobTags

if TYPE_CHECKING:
    from api.gateway import Gateway

log = logging.getLogger("gateway.api")
HIT_ANSWER_FIRST = True  # a cache hit's caller is answered before its job row is written (``_from_cache``)


def _answered(hit: Hit) -> dict[str, Any]:
    """What a cache hit's job row says: succeeded at no cost, what it saved, whose answer it is."""
    answer = hit.answer
    return {"status": "succeeded", "result": answer.get("result"), "model_used": answer.get("model_used"),
            "deployment": answer.get("deployment"), "cache_status": hit.kind,
            "cache_source_job": hit.source_job or None, "cache_similarity": hit.similarity,
            "saved_usd": hit.saved_usd}


@dataclass
class Submitted:
    view: dict[str, Any]
    created: bool
    sent_by_api: bool = False  # the api ran the first attempt itself (``view`` is its outcome)


@dataclass
class _Ahead:
    """What one round trip before admission tells the api about a job (see ``Acceptor._read_ahead``)."""

    epoch: str
    queues: QueueState
    breakers: dict[str, Any]


class Acceptor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def submit(self, caller: Caller, chat: ChatRequest, tags: JobTags, lane: Lane, reply_to: str | None,
               answer: Callable[[Submitted], None] | None = None) -> Submitted:
        """Serve it from the cache, or validate against the budgets, then admit inline (fast lane) and
        persist, or persist and queue. ``lane`` comes from ``Gateway.lane_for``. A job the api sends itself
        (``_send_here``) is handed to ``answer`` as soon as its attempt is recorded, before the attempt's
        last round trip; the return value is the same."""
        gw = self.gw
        payload = chat.provider_payload()
        plan = plan_for(gw.settings, caller.tenant, tags.feature, chat.model, chain_for(gw.settings, chat.model),
                        payload, tags.cache)
        vector = None
        if plan.read:
            served, vector = self._from_cache(caller, plan, tags, lane, chat.model, payload, answer)
            if served is not None:
                return served
        if plan.bypass is not None:
            CACHE_BYPASSED.labels(reason=plan.bypass).inc()
        env = gw.envelope(caller.tenant, tags.feature, lane, chat.model, payload, tags.deadline_at,
                          reply_to=reply_to, cache=plan.fill(vector))
        estimate = gw.admitter.prepare(env).total  # a job that can never fit is refused here, never queued
        may_send_here = bool(reply_to) and gw.settings.api.fast_lane_attempts > 0
        ahead = self._read_ahead(caller, env, may_send_here)
        with contextlib.ExitStack() as undo:  # until the job is stored, give back what it took
            undo.callback(self._drop_lease, env)
            fast = self._admit_inline(env, ahead)
            if fast:
                undo.callback(gw.admitter.withdraw, env)
            else:
                self._drop_lease(env)
            view, created = self._persist(env, tags, estimate, fast, caller, "miss" if plan.read else "bypass")
            if not created:
                return Submitted(view, created=False)  # a repeated idempotency key: nothing new to send
            undo.pop_all()
        env.enqueued_at = time.time()
        if fast and reply_to and self._take_slot():
            return self._send_here(env, view, answer)
        self._hand_off(env, fast)
        return Submitted(view, created=True)

    def _from_cache(self, caller: Caller, plan: CachePlan, tags: JobTags, lane: Lane, model: str,
                    payload: dict[str, Any], answer: Callable[[Submitted], None] | None
                    ) -> tuple[Submitted | None, str | None]:
        """A job answered from the cache, before any budget is touched: its row is written finished
        (cost 0, what it saved, whose answer it is). None on a miss, or when the cache cannot answer,
        with the question's embedding when the lookup made one (its answer is stored with it).

        The caller is answered first and the row written right after (``HIT_ANSWER_FIRST``): the
        insert is most of a hit's work here, and a GET of the job a moment later finds it. With an
        idempotency key the row comes first: it may be another job's repeat."""
        cache = self.gw.attempts.cache
        lookup = cache.lookup(plan, epoch_key=self.gw.auth.epoch_key if caller.epoch is None else None)
        if lookup.hit is None:
            return None, lookup.vector
        if caller.epoch is None:  # a key from the cache: confirmed before anything is served to it
            if lookup.epoch is None:
                self.gw.auth.check(caller.api_key, "")
            else:
                self.gw.auth.saw_epoch(lookup.epoch)
                self.gw.auth.confirm(caller.api_key, lookup.epoch)
        row, now, answered = self._hit_row(caller, tags, lane, model, payload), utcnow(), _answered(lookup.hit)
        if answer is not None and tags.idempotency_key is None and HIT_ANSWER_FIRST:
            view = jobs.answered_view(caller.tenant, row, answered, now)
            answer(Submitted(view, created=True))
            self._persist_hit(caller.tenant, row, answered, now)
            return Submitted(view, created=True), None
        view, created = self._persist_hit(caller.tenant, row, answered, now)
        return Submitted(view, created=created), None

    def _hit_row(self, caller: Caller, tags: JobTags, lane: Lane, model: str, payload: dict[str, Any]) -> jobs.NewJob:
        deadline = tags.deadline_at(self.gw.settings.lanes[lane].deadline_s)
        return jobs.NewJob(new_job_id(), tags.feature, lane, tags.task, model, payload, deadline,
                           tags.idempotency_key, 0, caller.identity.key_id if caller.identity else None,
                           cache_status="hit")

    def _persist_hit(self, tenant: str, row: jobs.NewJob, answered: dict[str, Any],
                     now: datetime) -> tuple[dict[str, Any], bool]:
        with session_scope(self.gw.engine) as db:
            job, created = jobs.create_job(
                db, tenant_id=tenant, feature=row.feature, lane=row.lane, task=row.task, model=row.model,
                request=row.request, deadline=row.deadline, idempotency_key=row.idempotency_key,
                estimate_tokens=0, job_id=row.job_id, key_id=row.key_id, cache_status=answered["cache_status"],
                answered=answered, now=now)
            return jobs.job_view(job), created

    def _admit_inline(self, env: Envelope, ahead: _Ahead) -> bool:
        """True when the job is reserved now (interactive, nobody waiting ahead of it, budgets fit).
        Otherwise it will be queued: a 429 with Retry-After when it could not make its deadline."""
        admitter = self.gw.admitter
        if env.lane == Lane.INTERACTIVE and ahead.queues.interactive_waiting == 0:
            return admitter.try_admit(env, breakers=ahead.breakers).ok
        admitter.check_queue(env, ahead.queues)
        return False

    def _read_ahead(self, caller: Caller, env: Envelope, may_send_here: bool) -> _Ahead:
        """One round trip before admission: the auth epoch, the queues, the chain's breakers and, for an
        interactive job (likely admitted inline), its attempt lease taken up front under a new token.
        A caller taken from the key cache is confirmed against the epoch read here."""
        got: dict[str, Any] = {}
        batch = RedisBatch(self.gw.redis)
        batch.command(lambda pipe: pipe.get(self.gw.auth.epoch_key), lambda r: got.__setitem__("epoch", r[0] or ""))
        batch.command(lambda pipe: QueueState.queue_reads(pipe, self.gw.keys, env.lane, env.tenant),
                      lambda r: got.__setitem__("queues", QueueState.parse(r)))
        batch.script(self.gw.admitter.breakers.states_call(list(env.chain)), lambda b: got.__setitem__("breakers", b))
        if env.lane == Lane.INTERACTIVE:
            # When the api may send it itself (a caller waits), long enough for the whole attempt on
            # any deployment of the chain, since that path has no claim step; a worker that gets the
            # job instead (no free slot) claims it as usual.
            lease_s = (max(self.gw.attempts.lease_s(self.gw.settings.deployment(d)) for d in env.chain)
                       if may_send_here else self.gw.settings.admission.dispatch_lease_s)
            batch.command(lambda pipe: self.gw.leases.grant_in(pipe, env, lease_s))
        try:
            batch.execute()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc
        if caller.epoch != got["epoch"]:  # from the cache, or a key was revoked since: confirm it
            self.gw.auth.saw_epoch(got["epoch"])
            try:
                self.gw.auth.confirm(caller.api_key, got["epoch"])
            except GatewayError:
                self._drop_lease(env)
                raise
        return _Ahead(got["epoch"], got["queues"], got["breakers"])

    def _drop_lease(self, env: Envelope) -> None:
        """Give up a lease taken up front for a job that was not admitted inline after all."""
        if env.token:
            with contextlib.suppress(redis.RedisError, OSError):  # else it expires with its TTL
                self.gw.leases.release(env)
            env.token = ""

    def _take_slot(self) -> bool:
        return self.gw.settings.api.fast_lane_attempts > 0 and self.gw.fast_lane_slots.acquire(blocking=False)

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
            run_inline(env, self.gw.attempts, deliver)
        except Exception:
            log.exception("attempt %s of job %s failed in the api; recovery will send it again",
                          env.attempt, env.id)
        finally:
            self.gw.fast_lane_slots.release()
        return done[0] if done else Submitted(view, created=True)

    def _persist(self, env: Envelope, tags: JobTags, estimate: int, admitted: bool,
                 caller: Caller, cache_status: str) -> tuple[dict[str, Any], bool]:
        """Insert the job (admitted already, its lease held, when reserved inline); a repeated
        idempotency key returns the original job instead (``created`` False)."""
        with session_scope(self.gw.engine) as db:
            job, created = jobs.create_job(
                db, tenant_id=env.tenant, feature=env.feature, lane=env.lane, task=tags.task, model=env.model,
                request=env.request, deadline=datetime.fromtimestamp(env.deadline, UTC),
                idempotency_key=tags.idempotency_key, estimate_tokens=estimate, job_id=env.id,
                admitted_deployment=env.deployment if admitted else None,
                key_id=caller.identity.key_id if caller.identity else None, cache_status=cache_status,
            )
            return jobs.job_view(job), created

    def _hand_off(self, env: Envelope, fast: bool) -> None:
        try:
            if fast:
                self.gw.dispatch.send(env)
            else:
                self.gw.queues.push(env)
        except (redis.RedisError, OSError) as exc:
            log.error("could not queue job %s: %s", env.id, exc)
            with session_scope(self.gw.engine) as db:
                jobs.complete_job(db, env.id, status="failed",
                                  error={"type": "queue_unavailable", "message": str(exc)})
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc
