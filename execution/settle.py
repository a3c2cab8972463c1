"""After an attempt: give the budget tree the truth, at once, so no capacity is left idle.

- The reservation is settled against what the provider really metered (its own rule: OpenAI keeps
  max_tokens charged, Anthropic counts actual output), refunding or charging the difference.
- An attempt the provider never processed (429, refused connection, 4xx) is released in full.
- The provider's rate-limit headers pull the deployment's buckets down to what it says is left, so
  traffic the gateway does not see (another service on the same account) is accounted for; the
  deployment's headroom adapts to them, and backs off on a 429 (``budget_sync.lua``).
- The estimate calibration learns from the reported usage; the scheduler is woken for the refund
  (``wake_scheduler``, sent with the lease release: one round trip for both).

The input calibration (how each deployment counts prompts) takes at most one sample per deployment
and process every ``CALIBRATE_EVERY_S``, sent with the settlement: at hundreds of attempts per second
the averages would stay where they are; a quiet deployment keeps all of its samples.
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache

import redis
from redis.commands.core import Script

from execution.providers import ProviderCallError, ProviderResult, rate_limit_state
from shared.admission import Admitter
from shared.budget import Estimate
from shared.envelope import Envelope
from shared.keys import Keys
from shared.lanes import LANE_NAMES
from shared.lua import script
from shared.redis_batch import ScriptCall

log = logging.getLogger("gateway.attempt")

# Refused before any work: the provider's meter did not count these, so neither does ours. A 503/529
# ("overloaded") keeps its charge: refunding it would let the scheduler send the next job to a failing
# provider at once, and failing fast would turn into sending faster.
NOT_PROCESSED = frozenset({"rate_limit", "connection", "auth", "bad_request", "not_found"})
CALIBRATE_EVERY_S = 0.1

_last_calibrated: dict[str, float] = {}


def release_reservation(env: Envelope, admitter: Admitter) -> None:
    """Give back an attempt's whole reservation (it was never sent)."""
    admitter.store.release(admitter.reservation_id(env))


def settle_calls(env: Envelope, deployment: str, adm: Admitter, *, result: ProviderResult | None = None,
                 error: ProviderCallError | None = None, call_s: float = 0.0,
                 cost_usd: float = 0.0) -> list[ScriptCall]:
    """Settle the attempt's reservation and sync the deployment's buckets to the provider's headers, as
    script calls the worker sends in one round trip with the attempt's other end-of-attempt steps
    (the calibration's occasional samples are taken here, at once). ``call_s``: how long the call
    took, so how old its headers' counts are (``BudgetTree.header_targets``). The first call is the
    settlement (its reply a ``Settled``): its dollar budgets are charged ``cost_usd``, what the attempt
    is billed (0 for a failed one), never its worst case."""
    rid = adm.reservation_id(env)
    if result is not None:
        calls = _settle_success(adm, env, deployment, result, cost_usd)
    elif error is not None and error.kind in NOT_PROCESSED:
        calls = [adm.store.settle_call(rid, {})]
    else:  # it may have been processed: keep the tokens reserved (its dollars: what it is billed, nothing)
        calls = [adm.store.settle_call(rid, {b.key: b.cost for b in adm.buckets(env, deployment, env.estimate)
                                             if not b.is_window})]
    headers = result.headers if result is not None else (error.headers if error is not None else {})
    refused = error is not None and error.kind == "rate_limit"
    targets = adm.tree.header_targets(deployment, rate_limit_state(headers) if headers else {}, age_s=call_s,
                                      refused=refused)
    if (sync := adm.store.sync_call(targets, refused=refused)) is not None:
        calls.append(sync)
    return calls


def _settle_success(adm: Admitter, env: Envelope, deployment: str, result: ProviderResult,
                    cost_usd: float) -> list[ScriptCall]:
    used = Estimate(result.usage.input_tokens, result.usage.output_tokens)
    costs = adm.tree.settle_costs(deployment=deployment, lane=env.lane, tenant=env.tenant, feature=env.feature,
                                  reserved=env.estimate, used=used, key_id=env.key_id)
    calls = [adm.store.settle_call(adm.reservation_id(env), costs, cost_usd=cost_usd)]
    model = adm.settings.deployment(deployment).model
    try:
        sample = adm.calibrator.observe_call(deployment, env.job.prompt_tokens, env.job.prompt_chars,
                                             used.input_tokens)
        if sample is not None and _calibration_due(deployment):
            calls.append(sample)
        if adm.tree.provider_kind(deployment) != "openai":
            adm.calibrator.observe_output(env.tenant, env.feature, model, used.output_tokens)
    except Exception:  # a missed calibration sample costs nothing; the settlement must still go out
        log.exception("could not record the calibration sample of job %s", env.id)
    return calls


def _calibration_due(deployment: str) -> bool:
    """True at most once per ``CALIBRATE_EVERY_S`` per deployment (races between threads only add a sample)."""
    now = time.monotonic()
    if now - _last_calibrated.get(deployment, -CALIBRATE_EVERY_S) < CALIBRATE_EVERY_S:
        return False
    _last_calibrated[deployment] = now
    return True


def wake_scheduler(client: redis.Redis, keys: Keys) -> ScriptCall:
    """The scheduler's wake-up for a refund, after the settlement, when something waits that the refund
    could admit (``queue_wake.lua``): a fast-lane call, which waits in no queue, cost the scheduler a
    whole round per call (1.1 ms of its CPU) for nothing. One token at most stays in the list: a burst
    of refunds is one wake-up, not one scheduling round each."""
    waiting = [keys.waiting_count(lane) for lane in LANE_NAMES]
    return ScriptCall(_wake_script(client), [keys.wake, keys.delayed, *waiting], [])


@lru_cache(maxsize=8)
def _wake_script(client: redis.Redis) -> Script:
    return client.register_script(script("queue_wake"))
