"""One attempt of one job against one deployment, and what its outcome does to the job.

Two entry points, one attempt:

- ``run_dispatched``: a Celery worker's attempt. It claims the lease the scheduler granted with the
  dispatch (a redelivered or stale message finds it taken and stops), counting the attempt, and checks
  the breaker in the same round trip (a job admitted before the breaker opened goes back unsent).
- ``run_inline``: the api's fast lane. The lease was taken for the whole attempt before the job was
  admitted and the breaker read a moment ago, so there is nothing to claim; the caller is handed the
  job's view as soon as it is recorded, before the attempt's last round trip.

Then the same steps for both:

    call the provider ─▶ put the call's tokenized values back into the answer (its vault)
        ─▶ decide: done, or retry later ─▶ record attempt + job, and the call's audit record when it
           ends (one transaction) ─▶ park the retry ─▶ the end steps (``END_STEPS``), one round trip:
           tell the waiting caller, fill the cache, count the attempt, count metrics, feed the breaker,
           settle the budget (``execution.settle``), release the lease, drop the vault, wake the scheduler

A worker never sleeps and retries on its own: a retry goes back to the scheduler with a not-before
time and is admitted against the budget like any job, on whichever deployment of the chain may
take it then (breakers route around a failing one).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from execution.context import AttemptContext
from execution.providers import ProviderAdapter, ProviderCallError, ProviderResult, Usage, adapter_for
from execution.settle import release_reservation, settle_calls, wake_scheduler
from execution.streaming import send_streamed
from shared import attempt_metrics, pricing, tracing
from shared.answer_checks import failed_check
from shared.config import AuditPolicy, DeploymentConfig
from shared.db import audit, jobs
from shared.db.usage import AttemptUsage
from shared.envelope import Envelope, Unreadable
from shared.errors import InvalidRequest
from shared.job_stream import Entry, StreamWriter
from shared.privacy.policy import audit_policy
from shared.privacy.vault import Vault
from shared.redis_batch import RedisBatch
from shared.retry import RetryDecision
from shared.signals import announce, announce_end
from shared.storable import storable_copy
from shared.tenancy import metric_feature
from shared.translate import as_openai

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
    answer: dict[str, Any] | None = None  # the result's body as the caller gets it: tokenized values put back
    produced: Usage | None = None  # a stream that broke off after it began: what it had cost (``execution.streaming``)
    _stored_body: Any = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.result is not None

    def stored_body(self) -> Any:
        """The provider's answer as it can be stored (``storable_copy``), made once: the job's result and
        the audit record both keep it when no tokenized value was put back."""
        if self.result is None:
            return None
        if self._stored_body is None:
            self._stored_body = storable_copy(self.result.body)
        return self._stored_body

    def stored_answer(self) -> Any:
        """The caller's answer as it can be stored: the same copy as ``stored_body`` when it is the same object."""
        if self.answer is not None and self.result is not None and self.answer is self.result.body:
            return self.stored_body()
        return storable_copy(self.answer)

    def billed(self) -> ProviderResult | None:
        """What the settlement counts: the result, or what a stream that broke off had produced."""
        if self.result is not None or self.produced is None:
            return self.result
        headers = self.error.headers if self.error is not None else {}
        return ProviderResult(body={}, status=0, headers=headers, usage=self.produced,
                              latency_ms=float(self.latency_ms), deployment=self.deployment.name)


@dataclass
class Ended:
    """An attempt that is over, for the end steps: its outcome, the job's view once recorded (None when
    the record was refused: a redelivery), whether the job ended with it, and who sent it."""

    env: Envelope
    outcome: Outcome
    view: View | None
    retry: RetryDecision | None
    inline: bool
    escalation: Escalation | None = None

    @property
    def ends_job(self) -> bool:
        return self.escalation is None and (self.retry is None or not self.retry.retry)


@dataclass(frozen=True)
class Escalation:
    """A routed job's answer that failed ``check``: the job goes on at tier ``tier`` of its route."""

    check: str
    tier: int


Relay = Callable[[Entry], None]


def run_dispatched(env: Envelope, ctx: AttemptContext) -> View | None:
    """A worker's attempt (see the module docstring); the job's view, None when it was not sent."""
    deployment = ctx.deployment_for(env)
    ctx.directory.poll()  # tenants' and keys' settings changed? (at most one GET a second)
    claimed, breaker = _claim(ctx, env, deployment.name, ctx.settings.admission.attempt_lease_s)
    if not claimed:
        ctx.keeper.drop(env)
        log.warning("job %s was dispatched again after this message was sent; attempt %s dropped",
                    env.id, env.attempt)
        return None
    if not env.probe and breaker != "closed":
        ctx.keeper.drop(env)
        _bounce(ctx, env)
        return None
    ctx.keeper.hold(env, ctx.call_limit_s(deployment))
    return _run(env, ctx, deployment, inline=False)


def run_inline(env: Envelope, ctx: AttemptContext, deliver: Callable[[View], None],
               relay: Relay | None = None) -> View | None:
    """The api's fast-lane attempt (see the module docstring): ``deliver`` gets the job's view as soon
    as it is recorded; a retry goes back to the scheduler and announces its own end. A streamed job's
    entries go to ``relay`` as they come (the api's own caller), as well as to the job's stream."""
    deployment = ctx.deployment_for(env)
    ctx.keeper.hold(env, ctx.call_limit_s(deployment))
    return _run(env, ctx, deployment, inline=True, deliver=deliver, relay=relay)


def _run(env: Envelope, ctx: AttemptContext, deployment: DeploymentConfig, *, inline: bool,
         deliver: Callable[[View], None] | None = None, relay: Relay | None = None) -> View | None:
    outcome = _call(deployment, ctx, env, relay)
    if outcome.result is not None:
        body = outcome.result.body
        outcome.answer = env.vault.restore_body(body) if env.vault else body
    retry = None if outcome.ok else _decide_retry(ctx, env, outcome)
    escalation = _decide_escalation(ctx, env, outcome) if outcome.ok else None
    view = _record(ctx, env, outcome, retry, inline, escalation)
    if view is not None and retry is not None and retry.retry:
        ctx.queues.delay(_next_attempt(env, retry))
    if view is not None and escalation is not None:
        ctx.queues.delay(_escalated(env, escalation))
    if deliver is not None and view is not None:
        deliver(view)
    ended = Ended(env, outcome, view, retry, inline=inline, escalation=escalation)
    ctx.keeper.drop(env)  # the end steps release the lease: no heartbeat may bring it back
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
    An inline attempt's caller was handed the view already; long-polling callers learn of any end."""
    env, view = ended.env, ended.view
    if view is None or not ended.ends_job:
        return
    if not ended.inline and env.reply_to:
        batch.command(lambda pipe: announce(pipe, env.reply_to, view))
    batch.command(lambda pipe: announce_end(pipe, ctx.keys, env.tenant, env.id, view["status"]))


def _fill_cache(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """Store a succeeded job's answer where its cache plan says (``shared.cache``); never fails the attempt.
    What is stored is the answer as the provider gave it (tokenized values still placeholders): a hit
    puts back its own caller's values (``api.cache_hits``), never this one's."""
    env, view = ended.env, ended.view
    if view is None or not ended.ends_job or env.job.cache is None or view.get("status") != "succeeded":
        return
    if env.vault and ended.outcome.result is not None:
        view = dict(view, result=ended.outcome.stored_body())
    if isinstance(view.get("result"), dict):  # one form in the cache, whichever dialect asks next
        view = dict(view, result=as_openai(view["result"]))
    try:
        ctx.cache.fill(batch, env.job.cache, view, env.tenant, env.feature)
    except Exception:  # the answer is recorded and delivered; a cache that cannot take it only costs a miss
        log.exception("could not fill the cache with job %s", env.id)


def _count_attempt(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """For the retry budget: a worker's attempt was counted when it claimed its lease, an inline one here."""
    if ended.inline:
        batch.command(lambda pipe: ctx.retries.count_attempt_in(pipe, ended.outcome.deployment.name))


def _count_metrics(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    batch.command(lambda pipe: _count_for_metrics(pipe, ctx, ended))


def _count_route(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """A routed attempt's result on its route and tier: answered, escalated (the escalation rate) or failed."""
    route, env = ended.env.route, ended.env
    if route is None:
        return
    result = "escalated" if ended.escalation else ("answered" if ended.outcome.ok else "failed")
    tier = route.tier_name(route.tier_of(ended.outcome.deployment.name))
    batch.command(lambda pipe: attempt_metrics.count_route_into(pipe, ctx.keys, task=route.task or "auto",
                                                                tier=tier, result=result))
    if result == "escalated":
        log.info("job %s: the answer of %s failed the %s check; up to tier %s", env.id,
                 ended.outcome.deployment.name, ended.escalation.check if ended.escalation else "",
                 route.tier_name(ended.escalation.tier if ended.escalation else 0))


def _feed_breaker(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """The shared breaker sees every outcome (it logs and counts its own transitions)."""
    outcome, env = ended.outcome, ended.env
    batch.script(ctx.breakers.record_call(
        outcome.deployment.name, ok=outcome.ok, kind=outcome.error.kind if outcome.error else None,
        latency_s=outcome.latency_ms / 1000, probe=env.probe, ticket=env.ticket))


def _settle(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """Settle the reservation (dollar budgets at what the attempt is billed: nothing when it was not
    recorded) and sync the headers; the settlement's reply says which budget alerts are due."""
    outcome, env = ended.outcome, ended.env
    billed = outcome.cost_usd if ended.view is not None else 0.0
    try:
        settlement, *rest = settle_calls(env, outcome.deployment.name, ctx.admitter, result=outcome.billed(),
                                         error=outcome.error, call_s=outcome.latency_ms / 1000, cost_usd=billed)
        batch.script(settlement, lambda settled: ctx.admitter.alerts.settled(settled.windows))
        for call in rest:
            batch.script(call)
    except Exception:  # budgets heal by refill and expiry; never fail the recorded job over this
        log.exception("could not settle the budget of job %s attempt %s", env.id, env.attempt)


def _release_lease(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    batch.script(ctx.leases.release_call(ended.env))


def _drop_vault(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """The call's tokenized values live only for the call (``shared.privacy.vault``)."""
    if ended.ends_job and ended.env.vault:
        batch.command(lambda pipe: pipe.delete(ctx.keys.vault(ended.env.id)))


def _wake_scheduler(ctx: AttemptContext, batch: RedisBatch, ended: Ended) -> None:
    """For the refund the settlement made."""
    batch.script(wake_scheduler(ctx.redis, ctx.keys))


END_STEPS: tuple[Callable[[AttemptContext, RedisBatch, Ended], None], ...] = (
    _tell_the_caller, _fill_cache, _count_attempt, _count_metrics, _count_route, _feed_breaker, _settle,
    _release_lease, _drop_vault,
    _wake_scheduler)


def _count_for_metrics(pipe: Any, ctx: AttemptContext, ended: Ended) -> None:
    env, outcome = ended.env, ended.outcome
    usage = outcome.result.usage if outcome.result is not None else None
    attempt_metrics.count_into(
        pipe, ctx.keys, deployment=outcome.deployment.name, tenant=env.tenant,
        feature=metric_feature(ctx.settings, env.tenant, env.feature), lane=env.lane,
        status="succeeded" if outcome.error is None else outcome.error.kind, latency_s=outcome.latency_ms / 1000,
        tokens_in=usage.input_tokens if usage else 0, tokens_out=usage.output_tokens if usage else 0,
        cost_usd=outcome.cost_usd, retry=ended.retry.code if ended.retry is not None else None)


def _claim(ctx: AttemptContext, env: Envelope, deployment: str, lease_s: float) -> tuple[bool, str]:
    """Take the attempt's lease (counting the attempt), read its breaker and load the call's vault, in
    one round trip: a message admitted before the breaker opened must not reach a dead provider."""
    got: dict[str, Any] = {}
    (RedisBatch(ctx.redis)
     .script(ctx.leases.claim_call(env, lease_s, count=ctx.retries.attempt_counter(deployment)),
             lambda ok: got.__setitem__("claimed", ok))
     .script(ctx.breakers.states_call([deployment]),
             lambda states: got.__setitem__("breaker", str(states[deployment]["state"])))
     .command(lambda pipe: pipe.hgetall(ctx.keys.vault(env.id)), lambda r: got.__setitem__("vault", r[0]))
     .execute())
    env.vault = Vault(got["vault"]) if got["vault"] else None
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


def _call(deployment: DeploymentConfig, ctx: AttemptContext, env: Envelope, relay: Relay | None) -> Outcome:
    with tracing.span("attempt", parent=env.job.traceparent, job=env.id, attempt=env.attempt,
                      deployment=deployment.name, model=deployment.model) as current:
        outcome = _send(deployment, ctx, env, relay)
        if current is not None and outcome.error is not None:
            current.set_attribute("gateway.error", outcome.error.kind)
    return outcome


def _send(deployment: DeploymentConfig, ctx: AttemptContext, env: Envelope, relay: Relay | None) -> Outcome:
    provider = ctx.settings.providers[deployment.provider]
    # The provider call carries the attempt's trace context (tracing off: the caller's own, if it sent one).
    traceparent = tracing.current_traceparent() or env.job.traceparent
    headers = {"traceparent": traceparent} if traceparent else None
    adapter = adapter_for(deployment, provider)
    started = time.perf_counter()
    if env.job.stream is not None:
        return _send_streamed(adapter, ctx, env, headers, relay, started)
    try:
        result = adapter.call(env.request, headers, dialect=env.job.dialect)
    except ProviderCallError as err:
        return Outcome(deployment, _ms_since(started), error=err)
    except Exception as exc:  # noqa: BLE001 - a request or answer the adapter cannot handle ends this attempt
        return Outcome(deployment, _ms_since(started), error=_unsendable(exc, deployment.name))
    cost = pricing.cost_usd(deployment, provider.kind, result.usage)
    return Outcome(deployment, _ms_since(started), result=result, cost_usd=cost)


def _send_streamed(adapter: ProviderAdapter, ctx: AttemptContext, env: Envelope, headers: dict[str, str] | None,
                   relay: Relay | None, started: float) -> Outcome:
    """A streamed job's attempt (``execution.streaming``): its events to the job's stream, told to the api
    that waits for it (``reply_to``) or handed to this api's own relay."""
    deployment, kind = adapter.deployment, adapter.kind
    assert env.job.stream is not None
    writer = StreamWriter(ctx.redis, ctx.keys, env.id, env.job.stream, ctx.settings.streaming,
                          live_s=ctx.call_limit_s(deployment) + ctx.settings.streaming.keep_s, attempt=env.attempt,
                          channel=None if relay is not None else env.reply_to, local=relay)
    try:
        streamed = send_streamed(adapter, env, writer, headers)
    except Exception as exc:  # noqa: BLE001 - as in ``_send``: ends this attempt, never the process
        return Outcome(deployment, _ms_since(started), error=_unsendable(exc, deployment.name))
    billed = streamed.result.usage if streamed.result is not None else streamed.produced
    cost = pricing.cost_usd(deployment, kind, billed) if billed is not None else 0.0
    return Outcome(deployment, _ms_since(started), result=streamed.result, error=streamed.error, cost_usd=cost,
                   produced=streamed.produced)


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
    """A retry goes to the chain's next deployment. While that is one this job has not tried yet (a
    fallback: a failed breaker probe of the primary included), it is admitted at once against the
    fallback's own limits and spends no retry budget: nothing is sent again to the failing one, so a
    caller never fails while a fallback could serve. A retry that returns to a deployment already
    tried waits out backoff and Retry-After and is charged to that deployment's retry budget. For a
    route, the fallbacks are those admission may use (``Admitter.within_reach``): a lane that may not
    spill retries within its tier."""
    err = outcome.error
    assert err is not None
    reach = ctx.admitter.within_reach(dataclasses.replace(env, chain=_retry_chain(env), deployment=None))
    goes_to = reach[0] if reach else _retry_chain(env)[0]
    fallback = env.attempt < len(reach)  # each failure moves its deployment last: the next is untried
    decision = ctx.retries.decide(deployment=goes_to, attempt=env.attempt, retryable=err.retryable,
                                  kind=err.kind, retry_after_s=err.retry_after_s, fallback=fallback)
    if decision.retry and decision.not_before >= env.deadline:
        return RetryDecision(False, f"a retry would start after the job's deadline ({decision.reason})",
                             code="past_deadline")
    return decision


def _next_attempt(env: Envelope, retry: RetryDecision) -> Envelope:
    """The retry's envelope: a new attempt number, parked until not-before, with the deployment that
    just failed moved to the end of its chain, so a fallback (if any) is tried before it again."""
    return dataclasses.replace(env, attempt=env.attempt + 1, deployment=None, chain=_retry_chain(env),
                               not_before=retry.not_before, probe=False, ticket="", token="",
                               enqueued_at=time.time())


def _decide_escalation(ctx: AttemptContext, env: Envelope, outcome: Outcome) -> Escalation | None:
    """The cascade: a routed job whose answer fails a check the caller would care about (``routing.cascade``,
    ``shared.answer_checks``) goes up a tier, through admission like a retry, while its route has a higher
    tier and its deadline has not passed; otherwise the answer stands."""
    route, cascade = env.route, ctx.settings.routing.cascade
    if route is None or not cascade.enabled or outcome.result is None or env.job.stream is not None:
        return None  # a streamed answer went out as it came: there is no taking it back
    tier = route.tier_of(outcome.deployment.name) + 1
    if tier >= len(route.tiers) or time.time() >= env.deadline:
        return None
    check = failed_check(env.request, as_openai(outcome.result.body), cascade.checks)
    return Escalation(check, tier) if check is not None else None


def _escalated(env: Envelope, escalation: Escalation) -> Envelope:
    """The next attempt of an escalated job: admitted at once (no backoff), from the tier above."""
    now = time.time()
    return dataclasses.replace(env, attempt=env.attempt + 1, tier=escalation.tier, deployment=None, not_before=now,
                               probe=False, ticket="", token="", enqueued_at=now)


def _retry_chain(env: Envelope) -> list[str]:
    failed = env.deployment or env.chain[0]
    return [d for d in env.chain if d != failed] + [failed]


def _record(ctx: AttemptContext, env: Envelope, outcome: Outcome, retry: RetryDecision | None,
            inline: bool, escalation: Escalation | None = None) -> View | None:
    """Record the attempt and its effect on the job in one transaction, shared with the attempts other
    threads finish at the same time (``execution.group_commit``).

    The (job, attempt number) key is unique: when a redelivered message ran the same attempt again,
    the second record is refused here and nothing is billed or stored twice.
    """
    policy = audit_policy(ctx.settings, env.tenant)
    if escalation is not None:
        view = ctx.records.write(lambda db: _record_escalation(db, ctx, env, outcome, escalation))
    elif outcome.ok:
        view = ctx.records.write(lambda db: _audited(db, env, outcome, policy, inline,
                                                     _record_success(db, ctx, env, outcome)))
    else:
        view = ctx.records.write(lambda db: _audited(db, env, outcome, policy, inline,
                                                     _record_failure(db, ctx, env, outcome, retry)))
    if view is None:
        log.warning("attempt %s of job %s was already recorded (redelivery) or the job had finished; "
                    "not recorded again", env.attempt, env.id)
    return view


def _record_success(db: Any, ctx: AttemptContext, env: Envelope, outcome: Outcome) -> dict[str, Any] | None:
    result = outcome.result
    assert result is not None
    usage = result.usage
    tokens: dict[str, Any] = {"tokens_in": usage.input_tokens, "tokens_out": usage.output_tokens,
                              "cost_usd": outcome.cost_usd}
    ceiling = {"route_ceiling_usd": _ceiling_cost(ctx, env, usage)} if env.route is not None else {}
    return jobs.record_attempt(
        db, env.id, env.attempt, deployment=outcome.deployment.name, status="succeeded",
        http_status=result.status, latency_ms=outcome.latency_ms, **tokens,
        job_outcome={"status": "succeeded", "result": outcome.stored_answer(),
                     "model_used": outcome.deployment.model,
                     "deployment": outcome.deployment.name, **tokens, **ceiling},
        usage=_attempt_usage(ctx, env, outcome), zone=ctx.settings.billing.zone,
    )


def _record_escalation(db: Any, ctx: AttemptContext, env: Envelope, outcome: Outcome,
                       escalation: Escalation) -> dict[str, Any] | None:
    """An answer that failed a check: the attempt keeps its real usage and cost, the job goes on."""
    result = outcome.result
    assert result is not None and env.route is not None
    return jobs.record_attempt(
        db, env.id, env.attempt, deployment=outcome.deployment.name, status="escalated",
        http_status=result.status, latency_ms=outcome.latency_ms, tokens_in=result.usage.input_tokens,
        tokens_out=result.usage.output_tokens, cost_usd=outcome.cost_usd,
        error=f"the answer failed the {escalation.check} check; sent up to tier "
              f"{env.route.tier_name(escalation.tier)}",
        usage=_attempt_usage(ctx, env, outcome), zone=ctx.settings.billing.zone)


def _ceiling_cost(ctx: AttemptContext, env: Envelope, usage: Any) -> float:
    """The answer's usage priced at the route's most expensive tier: what it would have cost there."""
    assert env.route is not None
    ceiling = ctx.settings.deployment(env.route.ceiling)
    return pricing.cost_usd(ceiling, ctx.settings.providers[ceiling.provider].kind, usage)


def _attempt_usage(ctx: AttemptContext, env: Envelope, outcome: Outcome) -> AttemptUsage:
    """What the usage rollups count beyond tokens and cost: the kinds of tokens, and what provider caching
    (against every input token at the input price) and routing (against the model's first deployment,
    priced for the same usage) saved. Priced only when there is something to compare."""
    deployment, result = outcome.deployment, outcome.result
    if result is None:
        return AttemptUsage(model=deployment.model)
    usage, kind = result.usage, ctx.settings.providers[deployment.provider].kind
    cache_savings = routing_savings = 0.0
    if usage.cached_input_tokens or usage.cache_write_tokens:
        cache_savings = pricing.cost_without_cache(deployment, kind, usage) - outcome.cost_usd
    primary = ctx.primary_deployment(env.model)
    if primary is not None and primary.name != deployment.name:
        primary_kind = ctx.settings.providers[primary.provider].kind
        routing_savings = pricing.cost_usd(primary, primary_kind, usage) - outcome.cost_usd
    return AttemptUsage(deployment.model, usage.cached_input_tokens, usage.cache_write_tokens,
                        usage.reasoning_tokens, cache_savings, routing_savings)


def _record_failure(db: Any, ctx: AttemptContext, env: Envelope, outcome: Outcome,
                    retry: RetryDecision | None) -> dict[str, Any] | None:
    err = outcome.error
    assert err is not None
    goes_on = retry is not None and retry.retry
    reason = f" ({retry.reason})" if retry is not None and not retry.retry else ""
    job_outcome = None if goes_on else {
        "status": "failed", "deployment": outcome.deployment.name,
        "error": {"type": err.kind, "message": f"{err.public_message()}{reason}", "status": err.upstream_status,
                  "attempts": env.attempt},
    }
    produced = outcome.produced
    tokens: dict[str, Any] = {} if produced is None else {
        "tokens_in": produced.input_tokens, "tokens_out": produced.output_tokens, "cost_usd": outcome.cost_usd}
    if job_outcome is not None and produced is not None:
        job_outcome.update(tokens)
    return jobs.record_attempt(
        db, env.id, env.attempt, deployment=outcome.deployment.name, status="failed",
        http_status=err.upstream_status, error=f"{err.kind}: {err.message}", latency_ms=outcome.latency_ms,
        job_outcome=job_outcome, usage=AttemptUsage(model=outcome.deployment.model), zone=ctx.settings.billing.zone,
        **tokens)


def _audited(db: Any, env: Envelope, outcome: Outcome, policy: AuditPolicy, inline: bool,
             view: View | None) -> View | None:
    """The call's audit record, in the transaction that ends its job (``shared.db.audit``); none while
    the job goes on to a retry, or when nothing was recorded (a redelivery)."""
    if view is None or view["status"] not in ("succeeded", "failed"):
        return view
    received = outcome.stored_body()
    vault = env.vault or Vault()
    screening = env.job.screening if isinstance(env.job.screening, dict) else {}
    audit.append(
        db, tenant_id=env.tenant, kind="call", action=f"call.{view['status']}", actor=f"key:{env.job.key_id}",
        key_id=env.job.key_id, job_id=env.id, feature=env.feature, lane=env.lane, model=env.model,
        model_used=view.get("model_used"), deployment=outcome.deployment.name,
        decision={"cache": view.get("cache_status") or "miss", "route": env.chain, "sent_by": "api" if inline
                  else "worker", "attempts": env.attempt, "queued_ms": view.get("queued_ms"),
                  "outcome": view["status"], "error": (view.get("error") or {}).get("type")},
        redactions=screening.get("redactions") or None, screen=screening.get("screen"),
        tokens_in=view["usage"]["prompt_tokens"], tokens_out=view["usage"]["completion_tokens"],
        cost_usd=view["cost_usd"],
        **audit.contents(policy, sent=env.request, received=received, caller_got=view.get("result"),
                         caller_sent=vault.restore_request(env.request) if policy.content == "full" else None))
    return view


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)
