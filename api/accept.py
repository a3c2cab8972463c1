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
fast-lane job's reservation goes in the same round trip, under an id chosen up front, on the
deployment admission would pick were the interactive queue empty and its breaker closed, as the
previous submit found them (``_Guess``); when what comes back says otherwise (a queue, a breaker no
longer closed, a key revoked), it is refunded before admission decides afresh, so a guess never
changes the outcome, only saves a round trip. The job is then inserted already admitted (one
statement). What a submit that stops half-way took (the lease, the reservation) is given back by one
``ExitStack``.

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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis

from api.auth import Caller
from api.cache_hits import CacheHits
from api.metrics import CACHE_BYPASSED
from execution.attempt import run_inline
from shared import tracing
from shared.admission import Decision, QueueState
from shared.budget import Admission, Bucket, Estimate
from shared.cache.plan import plan_for
from shared.db import jobs
from shared.db.session import session_scope
from shared.dialects import chat_view
from shared.envelope import Envelope
from shared.errors import GatewayError, InvalidRequest, Overloaded, PermissionDenied, Unavailable
from shared.lanes import Lane
from shared.privacy.vault import save_in
from shared.redis_batch import RedisBatch, ScriptCall
from shared.schemas import JobTags, Submittable, relay_of

if TYPE_CHECKING:
    from api.gateway import Gateway

log = logging.getLogger("gateway.api")
# What refuses a call after its key was accepted, and is written to the audit log as ``call.rejected``:
# a bad request (blocked content and injections included), a model the key may not use, shedding, and a
# route or queue that cannot take it.
REFUSALS = (InvalidRequest, Overloaded, PermissionDenied, Unavailable)
# A fast-lane job's reservation rides in the read-ahead's round trip (``_Guess``); off, it takes one of its
# own after it (``ops/bench_ab.py --toggle api.accept:RESERVE_AHEAD:True:False`` compares the two).
RESERVE_AHEAD = True


@dataclass
class Submitted:
    view: dict[str, Any]
    created: bool
    sent_by_api: bool = False  # the api ran the first attempt itself (``view`` is its outcome)
    screening: dict[str, Any] | None = None  # what redaction and the injection screen found (this request's)
    trace: str | None = None  # the job's trace context, parent of the delivery span (``shared.tracing``)


@dataclass
class _Guess:
    """A fast-lane job's reservation sent with the read-ahead (see the module docstring)."""

    deployment: str
    call: ScriptCall
    estimate: Estimate
    buckets: list[Bucket]
    admission: Admission | None = None  # its reply, once the read-ahead is back


@dataclass
class _Ahead:
    """What one round trip before admission tells the api about a job (see ``Acceptor._read_ahead``)."""

    epoch: str
    queues: QueueState
    breakers: dict[str, Any]
    guess: _Guess | None = None


class Acceptor:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.hits = CacheHits(gw)
        # What the last read-ahead found (a hint for the next one's guess; threads share it, staleness is safe):
        self._interactive_idle = False  # nothing waiting in the interactive lane
        self._closed: dict[str, bool] = {}  # deployment -> its breaker was closed

    def submit(self, caller: Caller, chat: Submittable, tags: JobTags, lane: Lane, reply_to: str | None,
               answer: Callable[[Submitted], None] | None = None,
               stored: Callable[[dict[str, Any]], None] | None = None) -> Submitted:
        """Serve it from the cache, or validate against the budgets, then admit inline (fast lane) and
        persist, or persist and queue.
        ``lane`` comes from ``Gateway.lane_for``. ``stored`` gets the job's view as soon as it is in the
        store (an answer that begins before the job ends can name it). A job the api sends itself
        (``_send_here``) is handed to ``answer`` as soon as its attempt is recorded, before the
        attempt's last round trip; the return value is the same."""
        gw = self.gw
        with tracing.span("accept", parent=tracing.incoming.get(), tenant=caller.tenant, feature=tags.feature,
                          lane=str(lane), model=chat.model):
            traceparent = tracing.current_traceparent() or tracing.incoming.get()
            try:
                env = gw.envelope(caller.tenant, tags.feature, lane, chat.model, chat.provider_payload(),
                                  tags.deadline_at, reply_to=reply_to, identity=caller.identity, task=tags.task,
                                  stream=chat.stream, traceparent=traceparent, dialect=chat.dialect,
                                  relay=relay_of(chat))
                plan = plan_for(gw.settings, caller.tenant, tags.feature, chat.model, env.chain,
                                chat_view(env.request, env.job.dialect), tags.cache)
                vector = None
                if plan.read:
                    with tracing.span("cache", semantic=plan.semantic is not None):
                        served, vector = self.hits.serve(caller, plan, tags, env, answer)
                    if served is not None:
                        return served
                if plan.bypass is not None:
                    CACHE_BYPASSED.labels(reason=plan.bypass).inc()
                env.job = replace(env.job, cache=plan.fill(vector))
                return self._accept(caller, env, tags, reply_to, answer, stored, "miss" if plan.read else "bypass")
            except REFUSALS as exc:
                gw.record_refusal(caller, tags.feature, lane, chat.model, exc)
                raise

    def _accept(self, caller: Caller, env: Envelope, tags: JobTags, reply_to: str | None,
                answer: Callable[[Submitted], None] | None,
                stored: Callable[[dict[str, Any]], None] | None, cache_status: str) -> Submitted:
        gw = self.gw
        traceparent = env.job.traceparent
        estimate = gw.admitter.prepare(env).total  # a job that can never fit is refused here, never queued
        may_send_here = bool(reply_to) and gw.settings.api.fast_lane_attempts > 0
        ahead = self._read_ahead(caller, env, may_send_here)
        with contextlib.ExitStack() as undo:  # until the job is stored, give back what it took
            undo.callback(self._drop_lease, env)
            undo.callback(self._drop_vault, env)
            fast = self._admit_inline(env, ahead)
            if fast:
                undo.callback(gw.admitter.withdraw, env)
            else:
                self._drop_lease(env)
            view, created = self._persist(env, tags, estimate, fast, caller, cache_status)
            if stored is not None:
                stored(view)
            if not created:  # a repeated idempotency key: nothing new to send
                return Submitted(view, created=False, screening=env.job.screening, trace=traceparent)
            undo.pop_all()
        env.enqueued_at = time.time()
        if fast and reply_to and self._take_slot():
            return self._send_here(env, view, answer)
        self._hand_off(env, fast, short_lease=may_send_here)
        return Submitted(view, created=True, screening=env.job.screening, trace=traceparent)

    def _admit_inline(self, env: Envelope, ahead: _Ahead) -> bool:
        """True when the job is reserved now (interactive, nobody waiting ahead of it, budgets fit).
        Otherwise it will be queued: a 429 with Retry-After when it could not make its deadline, a 429
        ``insufficient_quota`` when a hard dollar budget cannot take it (``Admitter.over_budget``)."""
        admitter = self.gw.admitter
        if env.route is not None:
            self._refuse_closed_route(env, ahead)
        guessed = self._take_guess(env, ahead)
        if env.lane == Lane.INTERACTIVE and ahead.queues.interactive_waiting == 0:
            with tracing.span("admission", lane=str(env.lane), inline=True, ahead=guessed is not None):
                decision = guessed or admitter.try_admit(env, breakers=ahead.breakers)
            budget = decision.blocked_on_budget
            if budget is not None and (refusal := admitter.over_budget(env, budget, decision.admission.spent)):
                raise refusal
            if not decision.ok and env.route is not None:
                self._refuse_late_route(env, decision.admission.wait_s)
            return decision.ok
        admitter.check_queue(env, ahead.queues)
        admitter.check_budgets(env)
        return False

    def _guess(self, env: Envelope, may_send_here: bool) -> _Guess | None:
        """The reservation to send with the read-ahead, when the last read-ahead makes admission on the
        chain's first deployment likely: an interactive job the api may send itself, no route (its tiers
        decide), budgets on, nothing waiting, the breaker closed."""
        if not (RESERVE_AHEAD and may_send_here and env.lane == Lane.INTERACTIVE and env.route is None
                and self._interactive_idle and self.gw.settings.admission.enabled):
            return None
        deployment = self.gw.admitter.within_reach(env)[0]
        if not self._closed.get(deployment):
            return None
        return _Guess(deployment, *self.gw.admitter.reservation(env, deployment))

    def _take_guess(self, env: Envelope, ahead: _Ahead) -> Decision | None:
        """The guessed reservation's decision when it stands: admitted, with nothing waiting and the
        breaker closed in this read-ahead. One that does not stand is refunded (admission decides afresh
        under the same reservation id) and None returned."""
        guess = ahead.guess
        if guess is None or guess.admission is None:
            return None
        state = ahead.breakers.get(guess.deployment) or {}
        if (guess.admission.ok and env.lane == Lane.INTERACTIVE and ahead.queues.interactive_waiting == 0
                and state.get("state") == "closed"):
            env.admitted(guess.deployment, guess.estimate)
            return Decision(True, guess.deployment, guess.estimate, guess.admission, guess.buckets)
        self._refund_guess(env, ahead)
        return None

    def _refund_guess(self, env: Envelope, ahead: _Ahead) -> None:
        guess, ahead.guess = ahead.guess, None
        if guess is not None and guess.admission is not None and guess.admission.ok:
            with contextlib.suppress(redis.RedisError, OSError):  # else it is held until its reservation expires
                self.gw.admitter.store.release(self.gw.admitter.reservation_id(env))

    def _refuse_closed_route(self, env: Envelope, ahead: _Ahead) -> None:
        """A route whose every deployment in reach has its breaker open is a 503 with Retry-After, before
        anything is stored: queueing it would only hold the caller until a breaker half-opens."""
        wait_s = self.gw.admitter.route_closed(env, ahead.breakers)
        if wait_s is not None:
            raise Unavailable(f"Every deployment this request can use ({', '.join(self.gw.admitter.within_reach(env))}"
                              ") is failing and its circuit breaker is open; nothing was accepted. Retry after "
                              f"{wait_s:.0f}s.", code="route_unavailable",
                              headers={"retry-after": str(max(1, math.ceil(wait_s)))})

    def _refuse_late_route(self, env: Envelope, wait_s: float) -> None:
        """An interactive route no tier of which has the budget before the job's deadline is a 429 with the
        wait as Retry-After, before anything is stored."""
        left = env.deadline - time.time()
        if wait_s > left:
            raise Overloaded(f"No deployment this request can use has the budget for it before its deadline "
                             f"({left:.0f}s); the soonest frees up in ~{wait_s:.0f}s. Nothing was accepted.",
                             retry_after=wait_s, code="deadline_unreachable")

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
            # When the api may send it itself (a caller waits), a call's short lease, which its heartbeat
            # keeps alive from the moment the call starts (that path has no claim step); otherwise the
            # lease of a dispatch waiting for a worker.
            admission = self.gw.settings.admission
            lease_s = admission.attempt_lease_s if may_send_here else admission.dispatch_lease_s
            batch.command(lambda pipe: self.gw.leases.grant_in(pipe, env, lease_s))
        if env.vault:  # before the job exists anywhere a worker could pick it up
            vault, ttl_s = env.vault, self.gw.vault_ttl_s(env)
            batch.command(lambda pipe: save_in(pipe, self.gw.keys.vault(env.id), vault, ttl_s))
        guess = self._guess(env, may_send_here)
        if guess is not None:
            batch.script(guess.call, lambda admission: setattr(guess, "admission", admission))
        try:
            batch.execute()
        except (redis.RedisError, OSError) as exc:
            raise Unavailable("The gateway's queue (Redis) is unavailable; the job was not accepted. "
                              "Retry shortly.") from exc
        ahead = _Ahead(got["epoch"], got["queues"], got["breakers"], guess)
        self._interactive_idle = ahead.queues.interactive_waiting == 0
        self._closed.update((name, state.get("state") == "closed") for name, state in ahead.breakers.items())
        self.gw.directory.observe(got["epoch"])
        if caller.epoch != got["epoch"]:  # from the cache, or a key was revoked since: confirm it
            self.gw.auth.saw_epoch(got["epoch"])
            try:
                self.gw.auth.confirm(caller.api_key, got["epoch"])
            except GatewayError:
                self._drop_lease(env)
                self._refund_guess(env, ahead)
                raise
        return ahead

    def _drop_lease(self, env: Envelope) -> None:
        """Give up a lease taken up front for a job that was not admitted inline after all."""
        if env.token:
            with contextlib.suppress(redis.RedisError, OSError):  # else it expires with its TTL
                self.gw.leases.release(env)
            env.token = ""

    def _drop_vault(self, env: Envelope) -> None:
        """The vault of a job that was not stored after all (refused, or a repeated idempotency key)."""
        if env.vault:
            with contextlib.suppress(redis.RedisError, OSError):  # else it expires with its TTL
                self.gw.redis.delete(self.gw.keys.vault(env.id))

    def _take_slot(self) -> bool:
        return self.gw.settings.api.fast_lane_attempts > 0 and self.gw.fast_lane_slots.acquire(blocking=False)

    def _send_here(self, env: Envelope, view: dict[str, Any],
                   answer: Callable[[Submitted], None] | None) -> Submitted:
        """Run the admitted job's attempt on this thread (its lease taken by ``_read_ahead``). An
        attempt that breaks here (the store or Redis failing) is recovery's once its lease
        expires, as when a worker dies; the caller's wait then reads the store."""
        done: list[Submitted] = []

        def deliver(latest: dict[str, Any]) -> None:
            done.append(Submitted(latest, created=True, sent_by_api=True, screening=env.job.screening,
                                  trace=env.job.traceparent))
            if answer is not None:
                answer(done[0])

        streams = self.gw.streams
        relay = streams.threadsafe_relay(env.id) if streams is not None and env.job.stream is not None else None
        try:
            run_inline(env, self.gw.attempts, deliver, relay)
        except Exception:
            log.exception("attempt %s of job %s failed in the api; recovery will send it again",
                          env.attempt, env.id)
        finally:
            self.gw.fast_lane_slots.release()
        return done[0] if done else Submitted(view, created=True, screening=env.job.screening,
                                              trace=env.job.traceparent)

    def _persist(self, env: Envelope, tags: JobTags, estimate: int, admitted: bool,
                 caller: Caller, cache_status: str) -> tuple[dict[str, Any], bool]:
        """Insert the job (admitted already, its lease held, when reserved inline); a repeated
        idempotency key returns the original job instead (``created`` False)."""
        with session_scope(self.gw.engine) as db:
            return jobs.create_job_view(
                db, tenant_id=env.tenant, feature=env.feature, lane=env.lane, task=tags.task, model=env.model,
                request=env.request, deadline=datetime.fromtimestamp(env.deadline, UTC),
                idempotency_key=tags.idempotency_key, estimate_tokens=estimate, job_id=env.id,
                admitted_deployment=env.deployment if admitted else None, key_id=caller.key_id,
                screening=env.job.screening, route=env.route.to_dict() if env.route is not None else None,
                cache_status=cache_status, dialect=env.job.dialect, stream=env.job.stream,
            )

    def _hand_off(self, env: Envelope, fast: bool, *, short_lease: bool = False) -> None:
        try:
            if fast:
                if short_lease:  # taken for a call here, but no slot was free: it waits for a worker instead
                    self.gw.leases.extend(env, self.gw.settings.admission.dispatch_lease_s)
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
