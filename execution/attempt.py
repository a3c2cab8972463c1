"""One attempt of one job against one deployment, and what its outcome does to the job.

Two entry points, one attempt:

- ``run_dispatched``: a Celery worker's attempt. It claims the lease the scheduler granted with the
  dispatch (a redelivered or stale message finds it taken and stops), counting the attempt, and checks
  the breaker in the same round trip (a job admitted before the breaker opened goes back unsent).
- ``run_inline``: the api's fast lane. The lease was taken for the whole attempt before the job was
  admitted and the breaker read a moment ago, so there is nothing to claim; the caller is handed the
  job's view as soon as it is recorded, before the attempt's last round trip.

Then the same steps for both:

    call the provider ─▶ decide: done, or retry later ─▶ record attempt + job (one transaction)
        ─▶ park the retry ─▶ the end steps (``END_STEPS``), one round trip: tell the waiting caller,
           fill the cache, count the attempt, count metrics, feed the breaker, settle the budget
           (``execution.settle``), release the lease, wake the scheduler

A worker never sleeps and retries on its own: a retry goes back to the scheduler with a not-before
time and is admitted against the budget like any job, on whichever deployment of the chain may
take it then (breakers route around a failing one).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from execution.context import AttemptContext
from execution.providers import ProviderCallError, ProviderResult, adapter_for
from execution.settle import release_reservation, settle_calls, wake_scheduler
from shared import attempt_metrics, pricing
from shared.config import DeploymentConfig
from shared.db import jobs
from shared.envelope import Envelope, Unreadable
from shared.errors import InvalidRequest
from shared.redis_batch import RedisBatch
from shared.retry import RetryDecision
from shared.signals import announce
from shared.storable import storable_copy
from shared.tenancy import metric_feature

log = logging.getLogger("gateway.attempt")
View = dict[str, Any]


@dataclass
class Outcome:
    """What one attempt produced: either a provider result or the error that ended it."""

    deployment: DeploymentConfig
    latency_ms: int
    result: ProviderResult | None = None
    error: ProviderCallError | None = None
    cost_usd: float = 0.0

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass
class Ended:
    """An attempt that is over, for the end steps: its outcome, the job's view once recorded (None when
    the record was refused: a redelivery), whether the job ended with it, and who sent it."""

    env: Envelope
    outcome: Outcome
    view: View | None
    ends_job: bool
    inline: bool


def run_dispatched(env: Envelope, ctx: AttemptContext) -> View | None:
    """A worker's attempt (see the module docstring); the job's view, None when it was not sent."""
    deployment = ctx.deployment_for(env)
    claimed, breaker = _claim(ctx, env, deployment.name, ctx.lease_s(deployment))
    if not claimed:
        log.warning("job %s was dispatched again after this message was sent; attempt %s dropped",
                    env.id, env.attempt)
        return None
    if not env.probe and breaker != "closed":
        _bounce(ctx, env)
        return None
    return _run(env, ctx, deployment, inline=False)


def run_inline(env: Envelope, ctx: AttemptContext, deliver: Callable[[View], None]) -> View | None:
    """The api's fast-lane attempt (see the module docstring): ``deliver`` gets the job's view as soon
    as it is recorded; a retry goes back to the scheduler and announces its own end."""
    return _run(env, ctx, ctx.deployment_for(env), inline=True, deliver=deliver)


def _run(env: Envelope, ctx: AttemptContext, deployment: DeploymentConfig, *, inline: bool,
         deliver: Callable[[View], None] | None = None) -> View | None:
    outcome = _call(deployment, ctx, env.request)
    retry = None if outcome.ok else _decide_retry(ctx, env, outcome)
    view = _record(ctx, env, outcome, retry)
    if view is not None and retry is not None and retry.retry:
        ctx.queues.delay(_next_attempt(env, retry))
    if deliver is not None and view is not None:
        deliver(view)
    ended = Ended(env, outcome, view, ends_job=retry is None or not retry.retry, inline=inline)
    batch = RedisBatch(ctx.redis)
    for step in END_STEPS:
        step(ctx, batch, ended)
    batch.execute()
    return view


def fail_unreadable(entry: Unreadable, ctx: AttemptContext) -> None:
    """A dispatched envelope this version cannot run: its job (when the id is known) is failed with the
    reason, so recovery does not send it again and again."""
    log.error("job %s cannot run and is failed: %s", entry.id or "(unknown id)", entry.reason)
    if entry.id:
        with ctx.store() as db:
            jobs.complete_job(db, entry.id, status="failed", error={"type": "invalid_job", "message": entry.reason})


# -- the end steps: each adds its commands to the attempt's last round trip, in this order ---------


def _tell_the_caller(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """First, so the waiting caller is answered before the rest runs (Redis runs a pipeline in order).
    An inline attempt's caller was handed the view already."""
    env, view = ended.env, ended.view
    if view is not None and ended.ends_job and not ended.inline and env.reply_to:
        batch.command(lambda pipe: announce(pipe, env.reply_to, view))


def _fill_cache(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """Store a succeeded job's answer where its cache plan says (``shared.cache``); never fails the attempt."""
    env, view = ended.env, ended.view
    if view is None or not ended.ends_job or env.job.cache is None or view.get("status") != "succeeded":
        return
    try:
        ctx.cache.fill(batch, env.job.cache, view, env.tenant, env.feature)
    except Exception:  # the answer is recorded and delivered; a cache that cannot take it only costs a miss
        log.exception("could not fill the cache with job %s", env.id)


def _count_attempt(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """For the retry budget: a worker's attempt was counted when it claimed its lease, an inline one here."""
    if ended.inline:
        batch.command(lambda pipe: ctx.retries.count_attempt_in(pipe, ended.outcome.deployment.name))


def _count_metrics(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    batch.command(lambda pipe: _count_for_metrics(pipe, ctx, ended.env, ended.outcome))


def _feed_breaker(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """The shared breaker sees every outcome (it logs and counts its own transitions)."""
    outcome, env = ended.outcome, ended.env
    batch.script(ctx.breakers.record_call(
        outcome.deployment.name, ok=outcome.ok, kind=outcome.error.kind if outcome.error else None,
        latency_s=outcome.latency_ms / 1000, probe=env.probe, ticket=env.ticket))


def _settle(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    outcome, env = ended.outcome, ended.env
    try:
        for call in settle_calls(env, outcome.deployment.name, ctx.admitter, result=outcome.result,
                                 error=outcome.error, call_s=outcome.latency_ms / 1000):
            batch.script(call)
    except Exception:  # budgets heal by refill and expiry; never fail the recorded job over this
        log.exception("could not settle the budget of job %s attempt %s", env.id, env.attempt)


def _release_lease(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    batch.script(ctx.leases.release_call(ended.env))


def _wake_scheduler(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """For the refund the settlement made."""
    batch.command(lambda pipe: wake_scheduler(pipe, ctx.keys))


END_STEPS: tuple[Callable[[AttemptContext, RedisBatch, Ended], None], ...] = (
    _tell_the_caller, _fill_cache, _count_attempt, _count_metrics, _feed_breaker, _settle, _release_lease,
    _wake_scheduler)


def _count_for_metrics(pipe: Any, ctx: AttemptContext, env: Envelope, outcome: Outcome) -> None:
    usage = outcome.result.usage if outcome.result is not None else None
    attempt_metrics.count_into(
        pipe, ctx.keys, deployment=outcome.deployment.name, tenant=env.tenant,
        feature=metric_feature(ctx.settings, env.tenant, env.feature),
        status="succeeded" if outcome.error is None else outcome.error.kind, latency_s=outcome.latency_ms / 1000,
        tokens_in=usage.input_tokens if usage else 0, tokens_out=usage.output_tokens if usage else 0,
        cost_usd=outcome.cost_usd)


def _claim(ctx: AttemptContext, env: Envelope, deployment: str, lease_s: float) -> tuple[bool, str]:
    """Take the attempt's lease (counting the attempt) and read its breaker, in one round trip: a
    message admitted before the breaker opened must not reach a dead provider."""
    got: dict[str, Any] = {}
    (RedisBatch(ctx.redis)
     .script(ctx.leases.claim_call(env, lease_s, count=ctx.retries.attempt_counter(deployment)),
             lambda ok: got.__setitem__("claimed", ok))
     .script(ctx.breakers.states_call([deployment]),
             lambda states: got.__setitem__("breaker", str(states[deployment]["state"])))
     .execute())
    return got["claimed"], got["breaker"]


def _bounce(ctx: AttemptContext, env: Envelope) -> None:
    """Hand the job back to the scheduler unsent: no attempt recorded, its reservation given back."""
    with ctx.store() as db:
        back = jobs.return_to_queue(db, env.id)
    release_reservation(env, ctx.admitter)
    if back:
        ctx.queues.delay(dataclasses.replace(env, deployment=None, chain=_retry_chain(env), not_before=time.time(),
                                             probe=False, ticket="", token="", enqueued_at=time.time()))
    ctx.leases.release(env)
    log.info("job %s: the breaker of %s opened after admission; sent back to the scheduler",
             env.id, env.deployment)


def _call(deployment: DeploymentConfig, ctx: AttemptContext, request: dict[str, Any]) -> Outcome:
    provider = ctx.settings.providers[deployment.provider]
    started = time.perf_counter()
    try:
        result = adapter_for(deployment, provider).call(request)
    except ProviderCallError as err:
        return Outcome(deployment, _ms_since(started), error=err)
    except Exception as exc:  # noqa: BLE001 - a request or answer the adapter cannot handle ends this attempt
        return Outcome(deployment, _ms_since(started), error=_unsendable(exc, deployment.name))
    cost = pricing.cost_usd(deployment, provider.kind, result.usage)
    return Outcome(deployment, _ms_since(started), result=result, cost_usd=cost)


def _unsendable(exc: Exception, deployment: str) -> ProviderCallError:
    """An attempt that broke inside the gateway (the request cannot be said in the deployment's format,
    or its answer cannot be read): recorded as failed, never retried, never left for recovery
    to send again and again."""
    if isinstance(exc, InvalidRequest):
        return ProviderCallError(f"{deployment}: {exc.message}", kind="bad_request", deployment=deployment,
                                 body={"error": {"message": exc.message}}, retryable=False, detail=exc.message)
    log.exception("attempt on %s broke in the gateway", deployment)
    return ProviderCallError(f"{deployment}: the call could not be made or read: {type(exc).__name__}: {exc}",
                             kind="malformed", deployment=deployment, retryable=False)


def _decide_retry(ctx: AttemptContext, env: Envelope, outcome: Outcome) -> RetryDecision:
    err = outcome.error
    assert err is not None
    # The retry is charged to the budget of the deployment it will go to first: the chain's next one.
    goes_to = _retry_chain(env)[0]
    decision = ctx.retries.decide(deployment=goes_to, attempt=env.attempt,
                                  retryable=err.retryable, kind=err.kind, retry_after_s=err.retry_after_s)
    if decision.retry and decision.not_before >= env.deadline:
        return RetryDecision(False, f"a retry would start after the job's deadline ({decision.reason})")
    return decision


def _next_attempt(env: Envelope, retry: RetryDecision) -> Envelope:
    """The retry's envelope: a new attempt number, parked until not-before, with the deployment that
    just failed moved to the end of its chain, so a fallback (if any) is tried before it again."""
    return dataclasses.replace(env, attempt=env.attempt + 1, deployment=None, chain=_retry_chain(env),
                               not_before=retry.not_before, probe=False, ticket="", token="",
                               enqueued_at=time.time())


def _retry_chain(env: Envelope) -> list[str]:
    failed = env.deployment or env.chain[0]
    return [d for d in env.chain if d != failed] + [failed]


def _record(ctx: AttemptContext, env: Envelope, outcome: Outcome, retry: RetryDecision | None) -> View | None:
    """Record the attempt and its effect on the job in one transaction, shared with the attempts other
    threads finish at the same time (``execution.group_commit``).

    The (job, attempt number) key is unique: when a redelivered message ran the same attempt again,
    the second record is refused here and nothing is billed or stored twice.
    """
    if outcome.ok:
        view = ctx.records.write(lambda db: _record_success(db, env, outcome))
    else:
        view = ctx.records.write(lambda db: _record_failure(db, env, outcome, retry))
    if view is None:
        log.warning("attempt %s of job %s was already recorded (redelivery) or the job had finished; "
                    "not recorded again", env.attempt, env.id)
    return view


def _record_success(db: Any, env: Envelope, outcome: Outcome) -> dict[str, Any] | None:
    result = outcome.result
    assert result is not None
    usage = result.usage
    tokens: dict[str, Any] = {"tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens,
                              "cost_usd": outcome.cost_usd}
    return jobs.record_attempt(
        db, env.id, env.attempt, deployment=outcome.deployment.name, status="succeeded",
        http_status=result.status, latency_ms=outcome.latency_ms, **tokens,
        job_outcome={"status": "succeeded", "result": storable_copy(result.body),
                     "model_used": outcome.deployment.model,
                     "deployment": outcome.deployment.name, **tokens},
    )


def _record_failure(db: Any, env: Envelope, outcome: Outcome, retry: RetryDecision | None) -> dict[str, Any] | None:
    err = outcome.error
    assert err is not None
    goes_on = retry is not None and retry.retry
    reason = f" ({retry.reason})" if retry is not None and not retry.retry else ""
    job_outcome = None if goes_on else {
        "status": "failed", "deployment": outcome.deployment.name,
        "error": {"type": err.kind, "message": f"{err.public_message()}{reason}", "status": err.upstream_status,
                  "attempts": env.attempt},
    }
    return jobs.record_attempt(
        db, env.id, env.attempt, deployment=outcome.deployment.name, status="failed",
        http_status=err.upstream_status, error=f"{err.kind}: {err.message}", latency_ms=outcome.latency_ms,
        job_outcome=job_outcome,
    )


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
