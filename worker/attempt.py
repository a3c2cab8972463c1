"""One attempt of one job against one deployment, and what its outcome does to the job.

    claim the lease (and count the attempt) ─▶ call the provider
        ─▶ decide: done, or retry later ─▶ record attempt + job (one transaction) ─▶ park the retry
        ─▶ one round trip: feed the breaker, wake the waiter, settle the budget (worker.reconcile),
           release the lease and wake the scheduler

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

from shared import attempt_metrics, pricing
from shared.breaker import Breakers
from shared.config import DeploymentConfig, Settings, get_settings
from shared.db import jobs
from shared.db.session import session_scope
from shared.envelope import Envelope, Unreadable
from shared.errors import InvalidRequest
from shared.keys import Keys
from shared.leases import AttemptLeases
from shared.queues import WaitingQueues
from shared.redis_batch import RedisBatch
from shared.redis_conn import sync_redis
from shared.retry import RetryDecision, RetryPolicy
from shared.signals import announce
from shared.storable import storable_copy
from shared.tenancy import metric_feature
from worker.group_commit import group_commit
from worker.providers import ProviderCallError, ProviderResult, adapter_for
from worker.providers.base import Usage
from worker.providers.http import shared_client
from worker.reconcile import reconcile_calls, release_reservation, wake_scheduler

log = logging.getLogger("gateway.worker")


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


class Context:
    """The per-process Redis-backed helpers an attempt needs, built once."""

    def __init__(self, settings: Settings) -> None:
        client, keys = sync_redis(settings.redis_url), Keys(settings.key_prefix)
        self.settings = settings
        self.redis = client
        self.keys = keys
        self.leases = AttemptLeases(client, keys)
        self.breakers = Breakers.from_settings(client, keys, settings)
        self.retries = RetryPolicy(client, keys, settings.retries)
        self.queues = WaitingQueues(client, keys)


_CONTEXTS: dict[int, Context] = {}


def context(settings: Settings) -> Context:
    ctx = _CONTEXTS.get(id(settings))
    if ctx is None:
        ctx = _CONTEXTS[id(settings)] = Context(settings)
    return ctx


def warm_up(settings: Settings) -> None:
    """Do at start what the first attempt would otherwise pay for (~50 ms on this machine): the Redis
    helpers, every deployment's adapter, the pooled HTTP client and the price lookups (so a model
    nobody priced is reported when the process starts, not at its first call)."""
    context(settings)
    shared_client()
    for deployment in settings.deployments:
        provider = settings.providers[deployment.provider]
        adapter_for(deployment, provider)
        pricing.cost_usd(deployment, provider.kind, Usage())


def attempt_lease_s(deployment: DeploymentConfig, settings: Settings) -> float:
    """How long an attempt on ``deployment`` may hold its lease: its whole timeout and a margin."""
    return deployment.timeouts.total + settings.admission.lease_margin_s


def run_attempt(env: Envelope, settings: Settings | None = None, *, held: bool = False,
                deliver: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any] | None:
    """Send the attempt, record it, finish (or re-queue) the job. Returns the job's view.

    The api's fast lane runs it on the caller's own request (``api.service``):
    - ``held``: the caller took the lease for the whole attempt (``attempt_lease_s``) and read the
      breaker a moment ago, so there is nothing to claim; the attempt is counted as it finishes.
    - ``deliver``: takes the job's view as soon as it is recorded, before the finishing round trip,
      instead of the completion signal on ``env.reply_to`` (a retry still announces its end there).
    """
    settings = settings or get_settings()
    ctx = context(settings)
    deployment = settings.deployment(env.deployment or env.chain[0])
    if not held:
        claimed, breaker = _claim(ctx, env, deployment.name, attempt_lease_s(deployment, settings))
        if not claimed:
            log.warning("job %s was dispatched again after this message was sent; attempt %s dropped",
                        env.id, env.attempt)
            return None
        if not env.probe and breaker != "closed":
            _bounce(ctx, env, settings)
            return None
    outcome = _call(deployment, settings, env.request)
    retry = None if outcome.ok else _decide_retry(ctx, env, outcome)
    view = _record(env, outcome, retry)
    if view is not None and retry is not None and retry.retry:
        ctx.queues.delay(_next_attempt(env, retry))
    if deliver is not None and view is not None:
        deliver(view)
    ends_job = retry is None or not retry.retry
    _finish(ctx, env, outcome, settings, announce_view=view if deliver is None and ends_job else None,
            count=held)
    return view


def fail_unreadable(entry: Unreadable) -> None:
    """A dispatched envelope this version cannot run: its job (when the id is known) is failed with the
    reason, so the reconciler does not send it again and again."""
    log.error("job %s cannot run and is failed: %s", entry.id or "(unknown id)", entry.reason)
    if entry.id:
        with session_scope() as db:
            jobs.complete_job(db, entry.id, status="failed", error={"type": "invalid_job", "message": entry.reason})


def _finish(ctx: Context, env: Envelope, outcome: Outcome, settings: Settings,
            announce_view: dict[str, Any] | None, *, count: bool = False) -> None:
    """The attempt's end in Redis, in one round trip: wake the sync caller (first: Redis runs the
    pipeline in order, so the caller is answered before the rest runs), feed the shared breaker (it
    logs and counts its transitions), settle the budget, drop the lease and wake the scheduler.
    ``count``: count the attempt for the retry budget too (it was not counted by a claim)."""
    batch = RedisBatch(ctx.redis)
    if announce_view is not None and env.reply_to:
        batch.command(lambda pipe: announce(pipe, env.reply_to, announce_view))
    if count:
        batch.command(lambda pipe: ctx.retries.count_attempt_in(pipe, outcome.deployment.name))
    batch.command(lambda pipe: _count_for_metrics(pipe, ctx, env, outcome))
    batch.script(ctx.breakers.record_call(
        outcome.deployment.name, ok=outcome.ok, kind=outcome.error.kind if outcome.error else None,
        latency_s=outcome.latency_ms / 1000, probe=env.probe, ticket=env.ticket))
    try:
        for call in reconcile_calls(env, outcome.deployment.name, settings, result=outcome.result,
                                    error=outcome.error, call_s=outcome.latency_ms / 1000):
            batch.script(call)
    except Exception:  # budgets heal by refill and expiry; never fail the recorded job over this
        log.exception("could not reconcile the budget of job %s attempt %s", env.id, env.attempt)
    batch.script(ctx.leases.release_call(env))
    batch.command(lambda pipe: wake_scheduler(pipe, ctx.keys))
    batch.execute()


def _count_for_metrics(pipe: Any, ctx: Context, env: Envelope, outcome: Outcome) -> None:
    usage = outcome.result.usage if outcome.result is not None else None
    attempt_metrics.count_into(
        pipe, ctx.keys, deployment=outcome.deployment.name, tenant=env.tenant,
        feature=metric_feature(ctx.settings, env.tenant, env.feature),
        status="succeeded" if outcome.error is None else outcome.error.kind, latency_s=outcome.latency_ms / 1000,
        tokens_in=usage.input_tokens if usage else 0, tokens_out=usage.output_tokens if usage else 0,
        cost_usd=outcome.cost_usd)


def _claim(ctx: Context, env: Envelope, deployment: str, lease_s: float) -> tuple[bool, str]:
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


def _bounce(ctx: Context, env: Envelope, settings: Settings) -> None:
    """Hand the job back to the scheduler unsent: no attempt recorded, its reservation given back."""
    with session_scope() as db:
        back = jobs.return_to_queue(db, env.id)
    release_reservation(env, settings)
    if back:
        ctx.queues.delay(dataclasses.replace(env, deployment=None, chain=_retry_chain(env), not_before=time.time(),
                                             probe=False, ticket="", token="", enqueued_at=time.time()))
    ctx.leases.release(env)
    log.info("job %s: the breaker of %s opened after admission; sent back to the scheduler",
             env.id, env.deployment)


def _call(deployment: DeploymentConfig, settings: Settings, request: dict[str, Any]) -> Outcome:
    provider = settings.providers[deployment.provider]
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
    or its answer cannot be read): recorded as failed, never retried, never left for the reconciler
    to send again and again."""
    if isinstance(exc, InvalidRequest):
        return ProviderCallError(f"{deployment}: {exc.message}", kind="bad_request", deployment=deployment,
                                 body={"error": {"message": exc.message}}, retryable=False)
    log.exception("attempt on %s broke in the gateway", deployment)
    return ProviderCallError(f"{deployment}: the call could not be made or read: {type(exc).__name__}: {exc}",
                             kind="malformed", deployment=deployment, retryable=False)


def _decide_retry(ctx: Context, env: Envelope, outcome: Outcome) -> RetryDecision:
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


def _record(env: Envelope, outcome: Outcome, retry: RetryDecision | None) -> dict[str, Any] | None:
    """Record the attempt and its effect on the job in one transaction, shared with the attempts other
    threads finish at the same time (``worker.group_commit``).

    The (job, attempt number) key is unique: when a redelivered message ran the same attempt again,
    the second record is refused here and nothing is billed or stored twice.
    """
    if outcome.ok:
        view = group_commit.write(lambda db: _record_success(db, env, outcome))
    else:
        view = group_commit.write(lambda db: _record_failure(db, env, outcome, retry))
    if view is None:
        log.warning("attempt %s of job %s was already recorded (redelivery) or the job had finished; "
                    "not recorded again", env.attempt, env.id)
    return view


def _record_success(db: Any, env: Envelope, outcome: Outcome) -> dict[str, Any] | None:
    result = outcome.result
    assert result is not None
    usage = result.usage
    tokens = {"tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens, "cost_usd": outcome.cost_usd}
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
