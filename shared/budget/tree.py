"""The budget tree: which buckets a job's path touches, with what capacity, refill, floor and cost.

    deployment  RPM (cost 1) and TPM (input + output), or ITPM (input) + OTPM (output), each at
                limit x headroom, the headroom adapting to the provider's headers (``budget_sync.lua``);
                other lanes than interactive see a floor there: the interactive reserve, sized to
                the interactive lane's recent arrivals (at least ``reserve_min``, at most ``reserve``
                of the bucket), which they can never take
    lane        a lane with ceiling < 1 gets its own bucket per deployment token axis, at ceiling x
                the deployment's capacity and refill
    tenant      hard_tpm: a bucket never exceeded; soft_tpm: a borrowable bucket (may go into debt,
                down to one burst, when the scheduler lends idle capacity)
    feature     hard_tpm: a bucket never exceeded
    key         rpm, tpm: a key's own limits (``gateway keys``, ``/v1/admin/keys``), never exceeded
    spend       dollar budgets of the tenant, the tenant's feature and the key, per day and per month
                (``billing.timezone``): window buckets whose cost is the call's worst case in USD

Tenant and feature buckets are global across deployments: a tenant's limit is a contract on what the
tenant consumes, not on one provider account. Per deployment, a fallback would hand the tenant a
fresh quota and the limit would multiply with the number of deployments (the per-instance counting
flaw, in another guise). Their burst is one minute of the limit.

Burst: providers enforce per-minute limits over shorter windows too. ``burst_s`` says how many
seconds of the per-minute limit may be spent at once (capacity = limit x headroom x burst_s / 60,
refill = limit x headroom / 60 per second); it is read from ``DeploymentConfig.burst_s`` when that
field exists, else ``BURST_S``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from shared.budget.buckets import Bucket, ReserveRule, Scope, SyncTarget
from shared.budget.estimate import Estimate
from shared.budget.windows import PERIOD, WINDOWS, window_at
from shared.config import DeploymentConfig, DollarBudget, Settings
from shared.keys import Keys
from shared.lanes import Lane
from shared.tenancy import KeyPolicy

KeyPolicies = Callable[[int], KeyPolicy | None]

BURST_S = 60.0  # seconds of a per-minute deployment limit a provider lets through at once
TENANT_BURST_S = 60.0  # tenant and feature limits allow one minute's worth at once
TOKEN_AXES = ("tpm", "itpm", "otpm")
RESERVATION_MARGIN_S = 60.0  # a reservation outlives its attempt's total timeout by this much
RESERVE_TAU_S = 10.0  # the interactive lane's arrival rate is averaged over about this long

# Header axis (shared by execution/providers/ratelimits.py) -> deployment bucket axis.
HEADER_AXES = {"requests": "rpm", "tokens": "tpm", "input_tokens": "itpm", "output_tokens": "otpm"}


@dataclass(frozen=True)
class Meter:
    """One axis of one deployment as the gateway mirrors it (headroom applied)."""

    axis: str
    key: str
    limit: int
    capacity: float
    rate: float
    scope: Scope


@dataclass(frozen=True)
class Fit:
    """The biggest job a path can ever admit, per kind of cost (``inf`` where nothing limits it)."""

    total_tokens: float
    input_tokens: float
    output_tokens: float
    requests: float

    def admits(self, estimate: Estimate) -> bool:
        return (self.requests >= 1 and estimate.total <= self.total_tokens
                and estimate.input_tokens <= self.input_tokens
                and estimate.output_tokens <= self.output_tokens)


def _axis_cost(axis: str, estimate: Estimate) -> float:
    return {"rpm": 1, "tpm": estimate.total, "itpm": estimate.input_tokens,
            "otpm": estimate.output_tokens}[axis]


class BudgetTree:
    """Maps (deployment, lane, tenant, feature, estimate) to the buckets to reserve, from settings."""

    def __init__(self, settings: Settings, keys: Keys, key_policy: KeyPolicies | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.key_policy: KeyPolicies = key_policy or (lambda key_id: None)
        self._meters: dict[str, list[Meter]] = {}

    # -- deployment level -------------------------------------------------------------------------

    def burst_s(self, dep: DeploymentConfig) -> float:
        return float(getattr(dep, "burst_s", None) or BURST_S)

    def meters(self, deployment: str) -> list[Meter]:
        """The deployment's axes that have a limit, as mirrored buckets (worked out once: every admission
        and settlement asks)."""
        meters = self._meters.get(deployment)
        if meters is None:
            meters = self._meters[deployment] = self._mirror(deployment)
        return meters

    def _mirror(self, deployment: str) -> list[Meter]:
        dep = self.settings.deployment(deployment)
        burst = self.burst_s(dep)
        out = []
        for axis in ("rpm", *TOKEN_AXES):
            limit = getattr(dep.limits, axis)
            if limit:
                rate = limit * dep.headroom / 60.0
                scope = Scope("deployment", deployment=deployment, axis=axis)
                out.append(Meter(axis, scope.key(self.keys), limit, capacity=rate * burst, rate=rate, scope=scope))
        return out

    def deployment_bucket_keys(self, deployment: str) -> dict[str, str]:
        """Axis (rpm/tpm/itpm/otpm) -> bucket key, for header sync and the admin endpoint."""
        return {m.axis: m.key for m in self.meters(deployment)}

    def _reserve_share(self, lane: str) -> float:
        if lane == Lane.INTERACTIVE:
            return 0.0
        return self.settings.lanes[Lane.INTERACTIVE].reserve

    def _deployment_path(self, deployment: str, lane: str, estimate: Estimate) -> list[Bucket]:
        share = self._reserve_share(lane)
        ceiling = self.settings.lanes[lane].ceiling  # type: ignore[index]
        headroom = self.settings.deployment(deployment).headroom
        interactive: Literal["", "feed", "floor"] = "feed" if lane == Lane.INTERACTIVE else "floor" if share else ""
        out = []
        for m in self.meters(deployment):
            cost = _axis_cost(m.axis, estimate)
            out.append(Bucket(m.key, m.capacity, m.rate, cost, floor=share * m.capacity, scope=m.scope,
                              headroom=headroom, interactive=interactive))
            if ceiling < 1 and m.axis in TOKEN_AXES:
                scope = Scope("lane", deployment=deployment, axis=m.axis, lane=lane)
                out.append(Bucket(scope.key(self.keys), ceiling * m.capacity, ceiling * m.rate, cost, scope=scope))
        return out

    # -- tenant level -----------------------------------------------------------------------------

    def _per_minute(self, scope: Scope, tpm: int, cost: float) -> Bucket:
        rate = tpm / 60.0
        return Bucket(scope.key(self.keys), rate * TENANT_BURST_S, rate, cost, borrowable=scope.limit == "soft",
                      scope=scope)

    def _key_path(self, key_id: int | None, estimate: Estimate) -> list[Bucket]:
        """A key's own RPM (cost 1) and TPM, per minute like a tenant's."""
        policy = self.key_policy(key_id) if key_id else None
        if policy is None:
            return []
        out = []
        if policy.rpm:
            out.append(self._per_minute(Scope("key", tenant=policy.tenant, key_id=key_id, axis="rpm"), policy.rpm, 1))
        if policy.tpm:
            out.append(self._per_minute(Scope("key", tenant=policy.tenant, key_id=key_id, axis="tpm"), policy.tpm,
                                        estimate.total))
        return out

    def _tenant_path(self, tenant: str, feature: str | None, estimate: Estimate,
                     key_id: int | None = None) -> list[Bucket]:
        keyed = self._key_path(key_id, estimate)
        cfg = self.settings.tenants.get(tenant)
        if cfg is None:
            return keyed
        cost, out = estimate.total, keyed
        if cfg.hard_tpm:
            out.append(self._per_minute(Scope("tenant", tenant=tenant), cfg.hard_tpm, cost))
        if cfg.soft_tpm:
            out.append(self._per_minute(Scope("tenant", tenant=tenant, limit="soft"), cfg.soft_tpm, cost))
        feature_cfg = cfg.features.get(feature) if feature else None
        if feature_cfg and feature_cfg.hard_tpm:
            out.append(self._per_minute(Scope("feature", tenant=tenant, feature=feature), feature_cfg.hard_tpm, cost))
        return out

    # -- dollars ----------------------------------------------------------------------------------

    def budgets(self, tenant: str, feature: str | None, key_id: int | None) -> list[tuple[Scope, DollarBudget]]:
        """The dollar budgets a job of ``tenant``'s ``feature`` sent with key ``key_id`` is held to: the
        tenant's, its feature's and its key's (each as a scope without its window)."""
        cfg = self.settings.tenant(tenant)
        out = []
        if cfg.budget is not None:
            out.append((Scope("spend", tenant=tenant), cfg.budget))
        feature_cfg = cfg.features.get(feature) if feature else None
        if feature_cfg is not None and feature_cfg.budget is not None:
            out.append((Scope("spend", tenant=tenant, feature=feature), feature_cfg.budget))
        policy = self.key_policy(key_id) if key_id else None
        if policy is not None and policy.budget is not None:
            out.append((Scope("spend", tenant=tenant, key_id=key_id), policy.budget))
        return out

    def budget_of(self, scope: Scope) -> DollarBudget | None:
        """The budget a ``spend`` scope stands for, as configured now."""
        for candidate, budget in self.budgets(str(scope.tenant), scope.feature, scope.key_id):
            if candidate.owner == scope.owner:
                return budget
        return None

    def _spend_path(self, tenant: str, feature: str | None, key_id: int | None, worst_usd: float,
                    now: float) -> list[Bucket]:
        """A window bucket per budget and window (day, month) that has a limit, costing ``worst_usd``."""
        budgets = self.budgets(tenant, feature, key_id)
        if not budgets:
            return []
        zone, moment, out = self.settings.billing.zone, datetime.fromtimestamp(now, UTC), []
        for base, budget in budgets:
            for kind in WINDOWS:
                limit = budget.limit(kind)
                if limit is None:
                    continue
                window = window_at(kind, moment, zone)
                scope = Scope("spend", tenant=base.tenant, feature=base.feature, key_id=base.key_id, window=kind,
                              window_id=window.id)
                out.append(Bucket(scope.key(self.keys), limit, 0.0, worst_usd, scope=scope,
                                  window_end=window.ends_at, enforced=budget.enforce == "hard"))
        return out

    # -- the whole path ---------------------------------------------------------------------------

    def buckets_for(self, *, deployment: str, lane: str, tenant: str, feature: str | None,
                    estimate: Estimate, key_id: int | None = None, worst_usd: float = 0.0,
                    now: float | None = None) -> list[Bucket]:
        """Every bucket a job on this path must fit, with this estimate as its cost (``worst_usd`` on its
        dollar budgets, in their windows at ``now``)."""
        path = self._deployment_path(deployment, lane, estimate)
        spend = self._spend_path(tenant, feature, key_id, worst_usd, time.time() if now is None else now)
        return path + self._tenant_path(tenant, feature, estimate, key_id) + spend

    def settle_costs(self, *, deployment: str, lane: str, tenant: str, feature: str | None,
                     reserved: Estimate, used: Estimate, key_id: int | None = None) -> dict[str, float]:
        """What to pass to ``BudgetStore.settle``: what each meter really charged for the attempt.

        An OpenAI-style TPM meter charges prompt + max_tokens at request time and never refunds the
        unused output, so its buckets keep the reserved output; every other meter (Anthropic ITPM and
        OTPM, tenant and feature limits) is charged the tokens actually used. RPM keeps its 1.
        """
        kind = self.provider_kind(deployment)
        metered = Estimate(used.input_tokens, reserved.output_tokens) if kind == "openai" else used
        costs = {b.key: b.cost for b in self._deployment_path(deployment, lane, metered)}
        costs.update({b.key: b.cost for b in self._tenant_path(tenant, feature, used, key_id)})
        return costs

    def provider_kind(self, deployment: str) -> str:
        dep = self.settings.deployment(deployment)
        return self.settings.providers[dep.provider].kind

    def reservation_ttl(self, deployment: str) -> float:
        """How long a reservation lives unreported: the attempt's total timeout plus a margin."""
        return self.settings.deployment(deployment).timeouts.total + RESERVATION_MARGIN_S

    def header_targets(self, deployment: str, state: Mapping[str, float], age_s: float = 0.0,
                       *, refused: bool = False) -> list[SyncTarget]:
        """``BudgetStore.sync`` targets from a provider's rate-limit headers.

        ``state`` is ``execution.providers.ratelimits.rate_limit_state`` output. The provider's
        ``remaining`` includes the headroom slice we never use; ``budget_sync.lua`` takes it off at the
        headroom the bucket runs at.

        ``age_s``: how long ago the provider counted what the headers say (the call's length: it
        meters a request when it admits it, and a non-streamed answer brings the headers at the end).
        Its meter has refilled since, so the target is ``remaining`` plus that refill. Taken as "left
        now", a burst's answers arriving seconds later kept pulling the bucket down to a level long
        gone, and the deployment sat idle for ~2 s after every burst.

        ``refused``: the answer was a 429; every axis is a target (its headroom backs off) whether or
        not the headers name it.
        """
        dep = self.settings.deployment(deployment)
        least, most = min(dep.headroom_min, dep.headroom), max(dep.headroom_max, dep.headroom)
        out = []
        for header_axis, axis in HEADER_AXES.items():
            meter = self.meter(deployment, axis)
            remaining = state.get(f"{header_axis}_remaining")
            if meter is None or (remaining is None and not refused):
                continue
            # The provider's own bucket: the limit it states when lower than ours (plan changed, shared
            # account), else the one we configured.
            provider_limit = min(state.get(f"{header_axis}_limit") or meter.limit, meter.limit)
            refilled = provider_limit / 60.0 * max(0.0, age_s)
            out.append(SyncTarget(meter.key, None if remaining is None else remaining + refilled,
                                  provider_limit * self.burst_s(dep) / 60.0, meter.capacity, meter.rate,
                                  dep.headroom, least, most))
        return out

    def meter(self, deployment: str, axis: str) -> Meter | None:
        return next((m for m in self.meters(deployment) if m.axis == axis), None)

    def reserve_rule(self) -> ReserveRule:
        """The interactive reserve's sizing, from the interactive lane's settings."""
        lane = self.settings.lanes[Lane.INTERACTIVE]
        return ReserveRule(window_s=lane.reserve_window_s, least=lane.reserve_min, tau_s=RESERVE_TAU_S)

    def all_buckets(self) -> list[Bucket]:
        """Every bucket the configuration defines (cost 0), for the admin endpoint and metrics."""
        seen: dict[str, Bucket] = {}
        none = Estimate(0, 0)
        for dep in self.settings.deployments:
            for lane in self.settings.lanes:
                for b in self._deployment_path(dep.name, lane, none):
                    seen.setdefault(b.key, b)
        for tenant, cfg in self.settings.tenants.items():
            for feature in [None, *cfg.features]:
                for b in self._tenant_path(tenant, feature, none):
                    seen.setdefault(b.key, b)
        return list(seen.values())

    # -- limits a job can never pass --------------------------------------------------------------

    def largest_fit(self, *, deployment: str, lane: str, tenant: str | None = None,
                    feature: str | None = None) -> Fit:
        """The biggest job this path can ever admit: min over its buckets of capacity - floor.

        Soft (borrowable) buckets do not count: a job above them can still run on borrowed capacity.
        """
        limits = {"total": math.inf, "input": math.inf, "output": math.inf, "requests": math.inf}
        for kind, bucket in self._classified(deployment, lane, tenant, feature):
            limits[kind] = min(limits[kind], bucket.capacity - bucket.floor)
        return Fit(total_tokens=limits["total"], input_tokens=limits["input"],
                   output_tokens=limits["output"], requests=limits["requests"])

    def _classified(self, deployment: str, lane: str, tenant: str | None,
                    feature: str | None) -> Iterator[tuple[str, Bucket]]:
        """Each hard bucket on the path with the kind of cost it carries, found by probing the path
        with 2 input tokens, then 3 output tokens (RPM costs 1 either way)."""
        def path(e: Estimate) -> list[Bucket]:
            tenant_path = self._tenant_path(tenant, feature, e) if tenant else []
            return self._deployment_path(deployment, lane, e) + tenant_path

        kinds = {(2, 3): "total", (2, 0): "input", (0, 3): "output", (1, 1): "requests"}
        for a, b in zip(path(Estimate(2, 0)), path(Estimate(0, 3)), strict=True):
            if not a.borrowable:
                yield kinds[(int(a.cost), int(b.cost))], a

    def too_large(self, *, deployment: str, lane: str, tenant: str, feature: str | None,
                  estimate: Estimate, key_id: int | None = None, worst_usd: float = 0.0) -> str | None:
        """Why this job can never be admitted on this path, with the numbers; None when it can."""
        for b in self.buckets_for(deployment=deployment, lane=lane, tenant=tenant, feature=feature,
                                  estimate=estimate, key_id=key_id, worst_usd=worst_usd):
            if not b.borrowable and b.never_fits():
                if b.is_window:
                    return (f"this request could cost up to ${b.cost:.4f}, more than the whole of "
                            f"{self.describe(b, lane)}; lower max_tokens or shorten the prompt")
                unit = "requests" if b.scope is not None and b.scope.axis == "rpm" else "tokens"
                return (f"this request needs {b.cost:.0f} {unit} of {self.describe(b, lane)}, "
                        f"but at most {math.floor(b.capacity - b.floor)} can ever be admitted there; "
                        f"lower max_tokens or shorten the prompt")
        return None

    def describe(self, bucket: Bucket, lane: str) -> str:
        """A bucket in words, with the numbers it is made of."""
        s = bucket.scope
        if s is None:
            return bucket.key
        if s.level == "deployment":
            return self._describe_deployment(str(s.deployment), str(s.axis), lane)
        if s.level == "lane":
            ceiling = self.settings.lanes[s.lane].ceiling  # type: ignore[index]
            return f"the {s.lane} lane's {ceiling:.0%} ceiling of deployment {s.deployment} {str(s.axis).upper()}"
        if s.level == "spend":
            return self.describe_budget(s, bucket.capacity)
        if s.level == "key":
            policy = self.key_policy(int(s.key_id or 0))
            limit = getattr(policy, str(s.axis), None) if policy else None
            return f"key {policy.public_id if policy else s.key_id}'s own limit ({limit} {str(s.axis).upper()})"
        cfg = self.settings.tenant(str(s.tenant))
        if s.level == "tenant":
            tpm = cfg.hard_tpm if s.limit == "hard" else cfg.soft_tpm
            return f"tenant {s.tenant}'s {s.limit} limit ({tpm} TPM)"
        cap = cfg.features[str(s.feature)].hard_tpm
        return f"feature {s.feature} of tenant {s.tenant} (limit {cap} TPM)"

    def describe_budget(self, scope: Scope, limit: float) -> str:
        """A dollar budget in words: whose, which window, how much (``tenant acme's daily budget ($10.00)``)."""
        period = PERIOD.get(str(scope.window), str(scope.window))
        if scope.owner == "key":
            policy = self.key_policy(int(scope.key_id or 0))
            whose = f"key {policy.public_id if policy and policy.public_id else scope.key_id} (tenant {scope.tenant})'s"
        elif scope.owner == "feature":
            whose = f"tenant {scope.tenant}'s feature {scope.feature}'s"
        else:
            whose = f"tenant {scope.tenant}'s"
        return f"{whose} {period} budget (${limit:,.2f})"

    def _describe_deployment(self, deployment: str, axis: str, lane: str) -> str:
        dep = self.settings.deployment(deployment)
        text = (f"deployment {deployment} {axis.upper()} (limit {getattr(dep.limits, axis)}/min x headroom "
                f"{dep.headroom:g}, {self.burst_s(dep):g} s burst")
        share = self._reserve_share(lane)
        if share:
            text += f", less the interactive reserve the {lane} lane leaves (up to {share:.0%})"
        return text + ")"
