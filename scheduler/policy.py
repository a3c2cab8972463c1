"""Which waiting job to admit next: lanes by priority, weighted fair queuing on tokens within a lane.

Within a lane each tenant's head job gets a start-time fair queuing tag: start = max(lane virtual
time, the tenant's last finish), finish = start + estimated tokens / weight; the smallest finish goes
first. Costs are tokens, not requests, so a tenant sending long prompts gets its weight's share of
the TPM, not of the request count.

Blocking rules, so nobody waits behind someone else's limit:
- blocked by the tenant's own bucket (hard limit, feature cap): skip that tenant this round;
- blocked only by its soft limit: borrow idle capacity when no other tenant waits in the lane;
- blocked by a shared bucket (deployment, lane ceiling): that bucket is held for this job — no later
  candidate that needs the same bucket is admitted ahead of it this round (no starvation of a large
  job by a stream of small ones), while jobs on other buckets go on (backfill that can't delay it).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field

from shared.admission import Admitter
from shared.config import LANES, Settings
from shared.queues import Envelope, WaitingQueues

log = logging.getLogger("gateway.scheduler")


@dataclass
class Round:
    """What one scheduling round did, and when the next one is worth running."""

    admitted: list[Envelope] = field(default_factory=list)
    expired: list[tuple[Envelope, str]] = field(default_factory=list)
    wake_in: float = math.inf
    held: set[str] = field(default_factory=set)

    def blocked(self, wait_s: float) -> None:
        self.wake_in = min(self.wake_in, max(wait_s, 0.001))


class FairQueuing:
    def __init__(self, settings: Settings, admitter: Admitter, queues: WaitingQueues) -> None:
        self.settings = settings
        self.admitter = admitter
        self.queues = queues
        self.vtime: dict[str, float] = defaultdict(float)
        self.finish: dict[tuple[str, str], float] = {}
        self._tags: dict[tuple[str, str], tuple[float, float]] = {}

    def weight(self, tenant: str) -> float:
        cfg = self.settings.tenants.get(tenant)
        return cfg.weight if cfg else 1.0

    def tag(self, lane: str, env: Envelope) -> float:
        """The finish tag, fixed when the job becomes its tenant's head (start-time fair queuing)."""
        key = (lane, env.id)
        if key not in self._tags:
            if len(self._tags) > 100_000:  # heads of cancelled jobs never charged: forget old ones
                self._tags.clear()
            start = max(self.vtime[lane], self.finish.get((lane, env.tenant), 0.0))
            self._tags[key] = (start, start + max(env.estimate, 1) / self.weight(env.tenant))
        return self._tags[key][1]

    def charge(self, lane: str, env: Envelope) -> None:
        self.tag(lane, env)
        start, finish = self._tags.pop((lane, env.id))
        self.finish[(lane, env.tenant)] = finish
        self.vtime[lane] = start

    def run_round(self, limit: int, now: float) -> Round:
        result = Round()
        for lane in LANES:
            self._run_lane(lane, limit, now, result)
            if len(result.admitted) >= limit:
                break
        return result

    def _run_lane(self, lane: str, limit: int, now: float, result: Round) -> None:
        heads = self.queues.heads(lane, self.queues.active_tenants(lane))
        while heads and len(result.admitted) < limit:
            tenant, env = min(heads.items(), key=lambda item: self.tag(lane, item[1]))
            if env.expired(now):
                self._take(lane, tenant, env, heads)
                result.expired.append((env, "deadline passed while waiting for admission"))
                continue
            if self._needs_held_bucket(env, result.held):
                del heads[tenant]
                continue
            decision = self.admitter.try_admit(env)
            if not decision.ok and decision.blocked_on_soft_limit and len(heads) == 1:
                decision = self.admitter.try_admit(env, allow_borrow=True)  # idle capacity: borrow
            if decision.ok:
                self.charge(lane, env)
                self._take(lane, tenant, env, heads)
                result.admitted.append(env)
                continue
            if decision.admission.never:
                # Limits shrank (config changed) below this job: it can never run as it is.
                self._take(lane, tenant, env, heads)
                result.expired.append((env, f"can never fit the budget {decision.blocked_by}"))
                continue
            result.blocked(decision.admission.wait_s)
            if not decision.blocked_on_own_limit(env.tenant) and decision.blocked_by:
                result.held.add(decision.blocked_by)
            del heads[tenant]

    def _needs_held_bucket(self, env: Envelope, held: set[str]) -> bool:
        if not held:
            return False
        deployment = self.admitter.candidates(env)[0]
        est = self.admitter.estimate(env, deployment)
        return any(b.key in held for b in self.admitter.buckets(env, deployment, est))

    def _take(self, lane: str, tenant: str, env: Envelope, heads: dict[str, Envelope]) -> None:
        """Pop the head we decided on and look at the tenant's next job."""
        popped = self.queues.pop(lane, tenant, 1)
        if popped and popped[0].id != env.id:  # only the leader pops, so this means a bug
            log.error("queue head of %s/%s changed under the scheduler: %s != %s", lane, tenant,
                      popped[0].id, env.id)
        following = self.queues.heads(lane, [tenant])
        if following:
            heads[tenant] = following[tenant]
        else:
            heads.pop(tenant, None)
