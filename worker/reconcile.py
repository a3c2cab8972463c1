"""After an attempt: give the budget tree the truth, at once, so no capacity is left idle.

- The reservation is settled against what the provider really metered (its own rule: OpenAI keeps
  max_tokens charged, Anthropic counts actual output), refunding or charging the difference.
- An attempt the provider never processed (429, refused connection, 4xx) is released in full.
- The provider's rate-limit headers pull the deployment's buckets down to what it says is left, so
  traffic the gateway does not see (another service on the same account) is accounted for.
- The estimate calibration learns from the reported usage; the scheduler is woken for the refund.
"""

from __future__ import annotations

import logging

from shared.admission import Admitter
from shared.budget import Estimate, prompt_tokens
from shared.config import Settings
from shared.keys import Keys
from shared.queues import Envelope
from shared.redis_conn import sync_redis
from worker.providers import ProviderCallError, ProviderResult, rate_limit_state

log = logging.getLogger("gateway.worker")

NOT_PROCESSED = frozenset({"rate_limit", "overloaded", "connection", "auth", "bad_request", "not_found"})


_ADMITTERS: dict[int, Admitter] = {}


def _admitter(settings: Settings) -> Admitter:
    """One per process and settings object (settings are loaded once per process)."""
    adm = _ADMITTERS.get(id(settings))
    if adm is None:
        adm = _ADMITTERS[id(settings)] = Admitter(settings, sync_redis(settings.redis_url), Keys(settings.key_prefix))
    return adm


def reconcile(env: Envelope, deployment: str, settings: Settings, *, result: ProviderResult | None = None,
              error: ProviderCallError | None = None) -> None:
    adm = _admitter(settings)
    rid = adm.reservation_id(env)
    try:
        if result is not None:
            _settle_success(adm, env, deployment, result)
        elif error is not None and error.kind in NOT_PROCESSED:
            adm.store.release(rid)
        else:  # it may have been processed: keep what was reserved
            adm.store.settle(rid, {b.key: b.cost for b in adm.buckets(env, deployment, _reserved(env))})
        headers = result.headers if result is not None else (error.headers if error is not None else {})
        targets = adm.tree.header_targets(deployment, rate_limit_state(headers)) if headers else []
        if targets:
            adm.store.pull_down_many(targets)
        adm.store.r.lpush(Keys(settings.key_prefix).wake, "1")
    except Exception:  # budgets heal by refill and expiry; never fail the recorded job over this
        log.exception("could not reconcile the budget of job %s attempt %s", env.id, env.attempt)


def _settle_success(adm: Admitter, env: Envelope, deployment: str, result: ProviderResult) -> None:
    used = Estimate(result.usage.input_tokens, result.usage.output_tokens)
    costs = adm.tree.settle_costs(deployment=deployment, lane=env.lane, tenant=env.tenant, feature=env.feature,
                                  reserved=_reserved(env), used=used)
    adm.store.settle(adm.reservation_id(env), costs)
    model = adm.settings.deployment(deployment).model
    adm.calibrator.observe(model, prompt_tokens(env.request), used.input_tokens)
    if adm.tree.provider_kind(deployment) != "openai":
        adm.calibrator.observe_output(env.tenant, env.feature, model, used.output_tokens)


def _reserved(env: Envelope) -> Estimate:
    return Estimate(env.est_input, env.est_output)
