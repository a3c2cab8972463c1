"""One attempt of one job against one deployment, and what its outcome does to the job.

The seams later policies plug into are the two small functions at the bottom:
``choose_deployment`` (routing around breakers) and ``after_failure`` (retry as re-admission);
for now the first deployment of the chain serves and a provider failure fails the job.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from shared import pricing
from shared.config import DeploymentConfig, Settings, get_settings
from shared.db import jobs
from shared.db.session import session_scope
from shared.queues import Envelope
from shared.redis_conn import sync_redis
from shared.signals import announce
from worker.providers import ProviderCallError, ProviderResult, adapter_for

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


def run_attempt(env: Envelope, settings: Settings | None = None) -> dict[str, Any] | None:
    """Send the attempt, record it, finish the job and wake its waiter. Returns the job's view."""
    settings = settings or get_settings()
    deployment = settings.deployment(choose_deployment(env))
    outcome = _call(deployment, settings, env.request)
    view = _record(env, outcome)
    if view is not None:
        announce(sync_redis(settings.redis_url), env.reply_to, view)
    return view


def _call(deployment: DeploymentConfig, settings: Settings, request: dict[str, Any]) -> Outcome:
    provider = settings.providers[deployment.provider]
    started = time.perf_counter()
    try:
        result = adapter_for(deployment, provider).call(request)
    except ProviderCallError as err:
        return Outcome(deployment, _ms_since(started), error=err)
    cost = pricing.cost_usd(deployment, provider.kind, result.usage)
    return Outcome(deployment, _ms_since(started), result=result, cost_usd=cost)


def _record(env: Envelope, outcome: Outcome) -> dict[str, Any] | None:
    """Record the attempt and its effect on the job in one transaction (one write per attempt).

    The (job, attempt number) key is unique: when a redelivered message ran the same attempt again,
    the second record is refused here and nothing is billed or stored twice.
    """
    with session_scope() as db:
        attempt = jobs.start_attempt(db, env.id, env.attempt, outcome.deployment.name)
        if attempt is None:
            log.warning("attempt %s of job %s was already recorded (redelivery); not recorded again",
                        env.attempt, env.id)
            return None
        db.flush()
        attempt_id = int(attempt.id)
        if outcome.ok:
            _record_success(db, env, attempt_id, outcome)
        else:
            _record_failure(db, env, attempt_id, outcome)
        job = jobs.get_job_any(db, env.id)
        return jobs.job_view(job) if job is not None else None


def _record_success(db: Any, env: Envelope, attempt_id: int, outcome: Outcome) -> None:
    result = outcome.result
    assert result is not None
    usage = result.usage
    jobs.finish_attempt(
        db, attempt_id, status="succeeded", http_status=result.status, latency_ms=outcome.latency_ms,
        tokens_in=usage.input_tokens, tokens_out=usage.output_tokens, cost_usd=outcome.cost_usd,
    )
    jobs.complete_job(
        db, env.id, status="succeeded", result=result.body, model_used=outcome.deployment.model,
        deployment=outcome.deployment.name, tokens_in=usage.input_tokens,
        tokens_out=usage.output_tokens, cost_usd=outcome.cost_usd,
    )


def _record_failure(db: Any, env: Envelope, attempt_id: int, outcome: Outcome) -> None:
    err = outcome.error
    assert err is not None
    jobs.finish_attempt(db, attempt_id, status="failed", http_status=err.upstream_status,
                        error=f"{err.kind}: {err.message}", latency_ms=outcome.latency_ms)
    if after_failure(env, err):
        return
    jobs.complete_job(
        db, env.id, status="failed", deployment=outcome.deployment.name,
        error={"type": err.kind, "message": err.message, "status": err.upstream_status,
               "deployment": outcome.deployment.name},
    )


def choose_deployment(env: Envelope) -> str:
    """Which deployment serves this attempt: the scheduler's pick, else the chain's first."""
    return env.deployment or env.chain[0]


def after_failure(env: Envelope, err: ProviderCallError) -> bool:
    """Whether the job goes on after a failed attempt (retry/fallback); today it fails."""
    return False


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)

