"""Admission: a job may be sent only when its pre-flight estimate fits every budget on its path.

Used inline by the api (an interactive job with nobody ahead of it) and by the scheduler (everything
else). Both go through the same Lua reservation, so any number of api processes and the scheduler
admitting at once can never over-admit. The reservation id is ``job:attempt``, so re-trying the
same admission (a scheduler failover) never charges twice.

Dollar budgets are reserved in the same script, at the call's worst case (``worst_usd``). A job a hard
budget cannot take is refused with ``QuotaExceeded`` (``over_budget``), except a batch job whose deadline
is after the window's reset: it waits in its queue for the next window.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from shared import pricing
from shared.breaker import Breakers, Permit
from shared.budget import Admission, Bucket, BudgetStore, BudgetTree, Calibrator, Estimate, estimate, output_cap
from shared.budget.alerts import BudgetAlerts
from shared.budget.buckets import Seed
from shared.config import Settings
from shared.directory import Directory
from shared.envelope import Envelope
from shared.errors import InvalidRequest, Overloaded, QuotaExceeded
from shared.keys import Keys
from shared.lanes import Lane
from shared.redis_batch import ScriptCall


@dataclass
class Decision:
    ok: bool
    deployment: str
    estimate: Estimate
    admission: Admission
    buckets: list[Bucket]

    @property
    def blocked_by(self) -> str | None:
        return None if self.ok else self.admission.blocked_by

    @property
    def blocking(self) -> Bucket | None:
        """The bucket that blocked the admission (None when admitted)."""
        return next((b for b in self.buckets if b.key == self.blocked_by), None)

    @property
    def blocked_on_soft_limit(self) -> bool:
        """Blocked only by a tenant's soft limit: it may borrow when nobody else is waiting."""
        return self.blocking is not None and self.blocking.borrowable

    def blocked_on_own_limit(self, tenant: str) -> bool:
        """Blocked by a bucket only this tenant uses: that blocks nobody else."""
        bucket = self.blocking
        return bucket is not None and bucket.scope is not None and bucket.scope.owned_by(tenant)

    @property
    def blocked_on_budget(self) -> Bucket | None:
        """The hard dollar budget that blocked the admission, if that is what did."""
        bucket = self.blocking
        return bucket if bucket is not None and bucket.is_window and bucket.enforced else None


@dataclass(frozen=True)
class QueueState:
    """What the api reads from the waiting queues before accepting a job, in one round trip."""

    interactive_waiting: int  # jobs waiting in the interactive lane, all tenants
    depth: int  # jobs this tenant has waiting in the job's lane
    tokens_ahead: int  # estimated tokens waiting in the job's lane and the lanes above it

    @staticmethod
    def queue_reads(pipe: Any, keys: Keys, lane: str, tenant: str) -> None:
        """Add the reads to ``pipe``; ``parse`` turns their replies (in order) into a QueueState."""
        pipe.get(keys.waiting_count(Lane.INTERACTIVE))
        pipe.llen(keys.waiting(lane, tenant))
        for above in Lane(lane).and_above():
            pipe.get(keys.waiting_tokens(above))

    @classmethod
    def parse(cls, replies: Sequence[Any]) -> QueueState:
        waiting, depth, *tokens = replies
        return cls(int(waiting or 0), int(depth or 0), sum(int(t or 0) for t in tokens))


class Admitter:
    def __init__(self, settings: Settings, client: redis.Redis, keys: Keys, directory: Directory | None = None) -> None:
        self.settings = settings
        self.directory = directory
        self.tree = BudgetTree(settings, keys, key_policy=directory.key if directory is not None else None)
        self.store = BudgetStore(client, keys, reserve=self.tree.reserve_rule())
        self.calibrator = Calibrator(client, keys)
        self.breakers = Breakers.from_settings(client, keys, settings)
        self.alerts = BudgetAlerts(settings, client, keys, self.tree)

    # -- estimates ---------------------------------------------------------------------------------

    def estimate(self, env: Envelope, deployment: str) -> Estimate:
        dep = self.settings.deployment(deployment)
        kind = self.tree.provider_kind(deployment)
        learned = self.calibrator.learned_output(env.tenant, env.feature, dep.model) if kind != "openai" else None
        prompt = self.calibrator.prompt_input(deployment, env.job.prompt_tokens, env.job.prompt_chars)
        return estimate(env.request, dep, kind, prompt=prompt, learned_output=learned, dialect=env.job.dialect)

    def prepare(self, env: Envelope) -> Estimate:
        """Give the envelope its estimate for its preferred deployment (what the queues count it as);
        reject what can never fit."""
        deployment = self.candidates(env)[0]
        est = env.estimate = self.estimate(env, deployment)
        reason = self.tree.too_large(deployment=deployment, lane=env.lane, tenant=env.tenant,
                                     feature=env.feature, estimate=est, key_id=env.key_id,
                                     worst_usd=self.worst_usd(env, deployment, est))
        if reason:
            raise InvalidRequest(f"This job can never be admitted: {reason}.", param="max_tokens",
                                 code="job_too_large")
        return est

    # -- reservations ------------------------------------------------------------------------------

    def candidates(self, env: Envelope) -> list[str]:
        """Deployments this attempt may use, in the chain's order (fallbacks after the first); for a
        route, those of its tiers from ``env.tier`` up (tier by tier, until a retry moves the deployment
        that failed last: a lane that may spill then goes up a tier rather than back to it)."""
        if env.deployment:
            return [env.deployment]
        route = env.route
        if route is None:
            return list(env.chain)
        return [d for d in env.chain if route.tier_of(d) >= env.tier]

    def buckets(self, env: Envelope, deployment: str, est: Estimate) -> list[Bucket]:
        return self.tree.buckets_for(deployment=deployment, lane=env.lane, tenant=env.tenant,
                                     feature=env.feature, estimate=est, key_id=env.key_id,
                                     worst_usd=self.worst_usd(env, deployment, est))

    def worst_usd(self, env: Envelope, deployment: str, est: Estimate) -> float:
        """The most the call can cost on ``deployment``: its prompt estimate at the input price and its
        output cap (max_tokens) at the output price. Priced only when a dollar budget applies."""
        if not self.tree.budgets(env.tenant, env.feature, env.key_id):
            return 0.0
        dep = self.settings.deployment(deployment)
        return pricing.worst_case_usd(dep, self.tree.provider_kind(deployment), est.input_tokens,
                                      output_cap(env.request, dep, env.job.dialect))

    def try_admit(self, env: Envelope, *, allow_borrow: bool = False,
                  breakers: Mapping[str, Any] | None = None) -> Decision:
        """Reserve the estimate on the first deployment of the chain that may take it now.

        A deployment is skipped when its breaker is open, or when its budget could not fit the job
        before the job's deadline; the fallback is then charged to its own budget. Waiting a little
        for the preferred deployment beats paying a fallback, so a short wait is not a skip.
        ``breakers`` is a ``Breakers.states()`` snapshot (the scheduler takes one per round): a
        breaker it shows closed, or open for a while yet, is not asked again (see ``permit``).
        """
        first: Decision | None = None
        for deployment in self.within_reach(env):
            permit = self.permit(deployment, breakers)
            if not permit.allowed:
                continue
            if not self.settings.admission.enabled:  # budgets off (comparison runs); breakers still on
                decision = self._unchecked(env, deployment)
            else:
                decision = self._reserve(env, deployment, allow_borrow)
            if decision.ok:
                env.admitted(deployment, decision.estimate, probe=permit.probe, ticket=permit.ticket)
                return decision
            if permit.probe:
                self.breakers.release(deployment, permit)
            first = first or decision
            spills = env.route is not None and env.route.spill
            if decision.admission.wait_s < env.deadline - time.time() and not spills:
                break  # it will fit here in time: wait for it rather than fall back
        if first is None:  # every breaker on the chain is open
            return Decision(False, env.chain[0], env.estimate, Admission(False, None, self._breaker_wait(env)), [])
        return first

    def within_reach(self, env: Envelope) -> list[str]:
        """``candidates``, less a route's tiers above its first when its lane may not spill up: a batch
        job waits for its tier (its breaker to close, its budget to refill) rather than pay for a bigger one."""
        candidates = self.candidates(env)
        route = env.route
        if route is None or route.spill or env.deployment:
            return candidates
        lowest = min((route.tier_of(d) for d in candidates), default=0)
        return [d for d in candidates if route.tier_of(d) == lowest]

    def route_closed(self, env: Envelope, breakers: Mapping[str, Any]) -> float | None:
        """Seconds until a breaker of the route's reach may let a call through, when every one of them is
        open in ``breakers`` (a ``Breakers.states()`` snapshot); None when one is closed or due a probe."""
        waits = []
        for deployment in self.within_reach(env):
            state = breakers.get(deployment)
            if state is None or state["state"] != "open" or float(state.get("retry_in_s") or 0) <= 0:
                return None
            waits.append(float(state["retry_in_s"]))
        return min(waits) if waits else None

    def permit(self, deployment: str, snapshot: Mapping[str, Any] | None = None) -> Permit:
        """The breaker's answer for one more attempt. Closed, or open with time left, in the round's
        snapshot: answered from it (allow would say the same, and take no probe slot). Half-open, or
        open and due for a probe: asked, since only ``allow`` may hand out a probe slot."""
        state = snapshot.get(deployment) if snapshot is not None else None
        if state is not None and state["state"] == "closed":
            return Permit(allowed=True, state="closed")
        if state is not None and state["state"] == "open" and state["retry_in_s"] > 0:
            return Permit(allowed=False, state="open", retry_in_s=state["retry_in_s"])
        return self.breakers.allow(deployment)

    def withdraw(self, env: Envelope) -> None:
        """Undo an admission that will not be sent: refund the reservation, return a probe slot."""
        self.store.release(self.reservation_id(env))
        if env.probe and env.deployment:
            self.breakers.release(env.deployment, Permit(allowed=True, state="half_open", probe=True,
                                                         ticket=env.ticket))

    def _reserve(self, env: Envelope, deployment: str, allow_borrow: bool) -> Decision:
        call, est, buckets = self.reservation(env, deployment, allow_borrow)
        admission: Admission = call.run()
        if admission.unseeded:  # a new window, or Redis forgot: rebuild from the store, then ask again
            self.seed(buckets, admission.unseeded)
            admission = call.run()
        return Decision(admission.ok, deployment, est, admission, buckets)

    def reservation(self, env: Envelope, deployment: str,
                    allow_borrow: bool = False) -> tuple[ScriptCall, Estimate, list[Bucket]]:
        """The reservation of ``env`` on ``deployment`` as a script call (its reply an ``Admission``), with the
        estimate and the buckets it debits: ``_reserve`` runs it; the api sends it ahead (``api.accept``)."""
        est = self.estimate(env, deployment)
        buckets = self.buckets(env, deployment, est)
        call = self.store.reserve_call(self.reservation_id(env), buckets, ttl_s=self.tree.reservation_ttl(deployment),
                                       allow_borrow=allow_borrow)
        return call, est, buckets

    def seed(self, buckets: Sequence[Bucket], keys: Sequence[str]) -> None:
        """Create the dollar budgets ``keys`` (of ``buckets``) in Redis from what the store says they spent."""
        wanted = set(keys)
        seeds = []
        for bucket in buckets:
            if bucket.key in wanted and bucket.scope is not None and bucket.window_end is not None:
                spent = self.directory.spent_usd(bucket.scope, bucket.window_end) if self.directory else 0.0
                seeds.append(Seed(bucket, spent))
        self.store.seed(seeds)

    # -- dollar budgets ----------------------------------------------------------------------------

    def check_budgets(self, env: Envelope, spent: Mapping[str, float] | None = None) -> None:
        """For a job about to be queued: refuse it now (``QuotaExceeded``) when a hard dollar budget is
        already too spent to take it and it may not wait for the reset (see ``over_budget``). ``spent``:
        what ``budget_spent`` read for a whole batch; read here (one round trip) when not given."""
        if not self.settings.admission.enabled:
            return
        hard = self._hard_budgets(env)
        if not hard:
            return
        spent = spent if spent is not None else self.budget_spent([env])
        for bucket in hard:
            so_far = spent.get(bucket.key, 0.0)
            if so_far + bucket.cost > bucket.capacity:
                refusal = self.over_budget(env, bucket, spent=so_far)
                if refusal is not None:
                    raise refusal

    def budget_spent(self, envs: Sequence[Envelope]) -> dict[str, float]:
        """What the hard dollar budgets of ``envs`` have spent, in one round trip (seeding, first, the ones
        Redis does not hold)."""
        hard = {b.key: b for env in envs for b in self._hard_budgets(env)}
        if not hard:
            return {}
        spent = self.store.spent(list(hard))
        if len(spent) < len(hard):
            self.seed(list(hard.values()), [key for key in hard if key not in spent])
            spent = self.store.spent(list(hard))
        return spent

    def _hard_budgets(self, env: Envelope) -> list[Bucket]:
        deployment = self.candidates(env)[0]
        return [b for b in self.buckets(env, deployment, env.estimate) if b.is_window and b.enforced]

    def over_budget(self, env: Envelope, bucket: Bucket, spent: float | None) -> QuotaExceeded | None:
        """What to tell the caller of a job ``bucket`` (a hard dollar budget) cannot take; None when the job
        waits instead: a batch job whose deadline is after the window's reset. A refusal counts as the
        budget reaching 100% for its alerts."""
        assert bucket.scope is not None and bucket.window_end is not None
        now = time.time()
        if env.lane == Lane.BATCH and env.deadline >= bucket.window_end:
            return None
        spent = bucket.capacity if spent is None else spent
        self.alerts.refused(bucket, spent)
        zone = self.settings.billing.zone
        resets = datetime.fromtimestamp(bucket.window_end, UTC).astimezone(zone)
        left_s = max(1.0, bucket.window_end - now)
        message = (f"Budget exceeded: {self.tree.describe_budget(bucket.scope, bucket.capacity)} for "
                   f"{bucket.scope.window_id} ({self.settings.billing.timezone}) has ${spent:,.4f} spent or held by "
                   f"calls in flight, and this call could cost up to ${bucket.cost:,.4f}. It resets at "
                   f"{resets.isoformat()} (in {_duration(left_s)}).")
        if env.lane == Lane.BATCH:
            message += " A batch job whose deadline is after the reset waits for it."
        return QuotaExceeded(message, retry_after=left_s)

    def _breaker_wait(self, env: Envelope) -> float:
        states = self.breakers.states(self.candidates(env))
        waits = [float(s.get("retry_in_s", 1.0) or 1.0) for s in states.values()] or [1.0]
        return max(0.1, min(waits))

    def _unchecked(self, env: Envelope, deployment: str) -> Decision:
        return Decision(True, deployment, self.estimate(env, deployment), Admission(True, None, 0.0), [])

    @staticmethod
    def reservation_id(env: Envelope) -> str:
        return f"{env.id}:{env.attempt}"

    # -- shedding ----------------------------------------------------------------------------------

    def check_queue(self, env: Envelope, queues: QueueState) -> None:
        """Refuse (429) a job that would overflow its queue or could not start before its deadline."""
        if not self.settings.admission.enabled:
            return
        lane_cfg = self.settings.lanes[env.lane]
        rate = self.token_rate(env)
        depth, ahead = queues.depth, queues.tokens_ahead
        retry_after = max(1.0, ahead / rate) if rate else 60.0
        if depth >= lane_cfg.max_queue_per_tenant:
            raise Overloaded(
                f"Tenant {env.tenant!r} already has {depth} jobs waiting in the {env.lane} lane (the limit is "
                f"{lane_cfg.max_queue_per_tenant}); retry after {retry_after:.0f}s or submit fewer at once.",
                retry_after=retry_after, code="queue_full")
        expected_wait = (ahead + env.tokens) / rate if rate else 0.0
        left = env.deadline - time.time()
        if expected_wait > left:
            raise Overloaded(
                f"The {env.lane} lane holds about {ahead} tokens of work ahead of this job; at "
                f"{rate * 60:.0f} tokens/min it would start in ~{expected_wait:.0f}s, after its deadline "
                f"({left:.0f}s from now). Retry after {retry_after:.0f}s or give it a later deadline.",
                retry_after=retry_after, code="deadline_unreachable")

    def token_rate(self, env: Envelope) -> float:
        """Tokens per second the lane can get from the job's preferred deployment (input meter)."""
        deployment = self.candidates(env)[0]
        meters = [m for m in self.tree.meters(deployment) if m.axis in ("tpm", "itpm")]
        if not meters:
            return math.inf
        share = self.settings.lanes[env.lane].ceiling
        if env.lane != Lane.INTERACTIVE:
            share = min(share, 1 - self.settings.lanes[Lane.INTERACTIVE].reserve)
        return meters[0].rate * share


def _duration(seconds: float) -> str:
    """``5h 3m``, ``12m``, ``40s``: how long until a reset, for a message."""
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"
