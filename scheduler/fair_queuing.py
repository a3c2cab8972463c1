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
  job by a stream of small ones), while jobs on other buckets go on (backfill that can't delay it);
- blocked by a hard dollar budget with time to wait for its reset (a batch job): taken out of its queue
  and parked with the retries until the reset (``Round.parked``), so the tenant's jobs behind it, from
  other keys and features, go on.

Round trips per round, not per job: each tenant's next few envelopes are read ahead with one LRANGE
per tenant (pipelined), what the round took is popped per tenant at the end of the lane (only the
leader pops, and pushes go to the tail, so the read-ahead stays the queue's head), and the breakers
are read once per round (``Admitter.permit`` asks ``allow`` only for a half-open or due breaker).
Per admitted job there is one reservation left.
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from shared.admission import Admitter
from shared.config import Settings
from shared.envelope import Envelope, Unreadable, read_entry
from shared.errors import is_outage
from shared.lanes import LANES
from shared.queues import WaitingQueues

log = logging.getLogger("gateway.scheduler")
OVER_BUDGET = "over budget: "  # a verdict: a hard dollar budget refuses the job and its deadline is before the reset


@dataclass
class Round:
    """What one scheduling round did, and when the next one is worth running."""

    admitted: list[Envelope] = field(default_factory=list)
    expired: list[tuple[Envelope, str]] = field(default_factory=list)
    failed: list[tuple[Envelope | Unreadable, str]] = field(default_factory=list)  # jobs that cannot run
    refused: list[tuple[Envelope, str]] = field(default_factory=list)  # over a hard dollar budget, no time to wait
    parked: list[tuple[Envelope, float]] = field(default_factory=list)  # over one, waiting for its reset (epoch s)
    wake_in: float = math.inf
    held: set[str] = field(default_factory=set)
    quiet: bool = False  # nothing was waiting at all: no queue, no parked retry

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
        self._breakers: dict[str, Any] | None = None  # the round's breaker snapshot, read when first needed

    def weight(self, tenant: str) -> float:
        cfg = self.settings.tenants.get(tenant)
        return cfg.weight if cfg else 1.0

    def tag(self, lane: str, env: Envelope | Unreadable) -> float:
        """The finish tag, fixed when the job becomes its tenant's head (start-time fair queuing)."""
        key = (lane, env.id)
        if key not in self._tags:
            if len(self._tags) > 100_000:  # heads of cancelled jobs never charged: forget old ones
                self._tags.clear()
            start = max(self.vtime[lane], self.finish.get((lane, env.tenant), 0.0))
            self._tags[key] = (start, start + max(env.tokens, 1) / self.weight(env.tenant))
        return self._tags[key][1]

    def charge(self, lane: str, env: Envelope) -> None:
        self.tag(lane, env)
        start, finish = self._tags.pop((lane, env.id))
        self.finish[(lane, env.tenant)] = finish
        self.vtime[lane] = start

    def run_round(self, limit: int, now: float) -> Round:
        result = Round()
        self._breakers = None
        for lane, tenants in self._active_tenants(now, result).items():
            if tenants:
                self._run_lane(lane, tenants, limit, now, result)
            if len(result.admitted) >= limit:
                break
        return result

    def _active_tenants(self, now: float, result: Round) -> dict[str, list[str]]:
        """Tenants with something waiting, per lane in priority order, in one round trip that also
        looks at the earliest parked retry: retries that are due are moved to their queues first, and
        the round says when the next one will be (so the scheduler wakes for it); and at the auth epoch
        (a tenant's or key's settings changed: its budgets apply from this round)."""
        with self.queues.r.pipeline(transaction=False) as pipe:
            for lane in LANES:
                pipe.smembers(self.queues.keys.active_tenants(lane))
            pipe.zrange(self.queues.keys.delayed, 0, 0, withscores=True)
            pipe.get(self.queues.keys.auth_epoch)
            *replies, first_due, epoch = pipe.execute()
        if self.admitter.directory is not None:
            self.admitter.directory.observe(str(epoch or ""))
        if first_due and first_due[0][1] <= now and self.queues.promote_due(now):
            return self._active_tenants(now, result)
        if first_due:
            result.blocked(first_due[0][1] - now)
        result.quiet = not first_due and not any(replies)
        return {lane: sorted(members) for lane, members in zip(LANES, replies, strict=True)}

    def _breaker_states(self) -> dict[str, Any] | None:
        if self._breakers is None and self.settings.admission.enabled:
            self._breakers = self.admitter.breakers.states()
        return self._breakers

    def _run_lane(self, lane: str, tenants: list[str], limit: int, now: float, result: Round) -> None:
        ahead = _ReadAhead(self.queues, lane, most=limit)
        heads = ahead.start(tenants)
        try:
            self._admit_from(lane, heads, ahead, limit, now, result)
        finally:
            ahead.pop_taken()

    def _admit_from(self, lane: str, heads: dict[str, Envelope | Unreadable], ahead: _ReadAhead, limit: int,
                    now: float, result: Round) -> None:
        while heads and len(result.admitted) < limit:
            tenant, env = min(heads.items(), key=lambda item: self.tag(lane, item[1]))
            if isinstance(env, Unreadable):
                ahead.take(tenant, heads)
                result.failed.append((env, env.reason))
                continue
            if env.id in ahead.cancelled:  # ended in the store already: dropped, never admitted
                ahead.take(tenant, heads)
                continue
            if env.expired(now):
                ahead.take(tenant, heads)
                result.expired.append((env, "deadline passed while waiting for admission"))
                continue
            try:
                verdict = self._decide(env, result, alone=len(heads) == 1)
            except Exception as exc:  # noqa: BLE001 - a job that breaks admission fails alone
                if is_outage(exc):
                    raise  # Redis is down: the round is retried, the job is not at fault
                log.exception("job %s could not be admitted and is failed", env.id)
                verdict = f"it could not be admitted ({type(exc).__name__}: {str(exc)[:200]})"
            if verdict == "admitted":
                self.charge(lane, env)
                ahead.take(tenant, heads)
                result.admitted.append(env)
            elif verdict == "wait":
                del heads[tenant]
            elif verdict == "parked":
                ahead.take(tenant, heads)
            else:
                ahead.take(tenant, heads)
                self._end(env, verdict, result)

    @staticmethod
    def _end(env: Envelope, verdict: str, result: Round) -> None:
        """A job this round ends: it can never fit (expired), a dollar budget refused it, or it broke."""
        if verdict.startswith(OVER_BUDGET):
            result.refused.append((env, verdict.removeprefix(OVER_BUDGET)))
        elif verdict.startswith("can never"):
            result.expired.append((env, verdict))
        else:
            result.failed.append((env, verdict))

    def _decide(self, env: Envelope, result: Round, *, alone: bool) -> str:
        """``admitted`` (reserved), ``wait`` (not this round), or why it can never run. ``alone``: no
        other tenant waits in the lane, so a soft limit may borrow idle capacity."""
        if self._needs_held_bucket(env, result.held):
            return "wait"
        decision = self.admitter.try_admit(env, breakers=self._breaker_states())
        if not decision.ok and decision.blocked_on_soft_limit and alone:
            decision = self.admitter.try_admit(env, allow_borrow=True, breakers=self._breaker_states())
        if decision.ok:
            return "admitted"
        budget = decision.blocked_on_budget
        if budget is not None and budget.window_end is not None:
            refusal = self.admitter.over_budget(env, budget, decision.admission.spent)
            if refusal is not None:
                return OVER_BUDGET + refusal.message
            result.parked.append((env, budget.window_end))
            return "parked"
        if decision.admission.never:  # limits shrank (config changed) below this job: it can never run as it is
            return f"can never fit the budget {decision.blocked_by}"
        result.blocked(decision.admission.wait_s)
        if not decision.blocked_on_own_limit(env.tenant) and decision.blocked_by:
            result.held.add(decision.blocked_by)
        return "wait"

    def _needs_held_bucket(self, env: Envelope, held: set[str]) -> bool:
        if not held:
            return False
        deployment = self.admitter.candidates(env)[0]
        est = self.admitter.estimate(env, deployment)
        return any(b.key in held for b in self.admitter.buckets(env, deployment, est))



class _ReadAhead:
    """Each tenant's next envelopes in a lane, read ahead; what the round takes is popped at the end
    (``pop_taken``), one script call per tenant. A tenant's first read is its first ``FIRST`` (a
    blocked round reads little more than it needs); each further read is ``GROWTH`` times larger, up
    to ``most``. A read that came back short had the whole queue: it is not read again this round."""

    FIRST = 2
    GROWTH = 4

    def __init__(self, queues: WaitingQueues, lane: str, most: int) -> None:
        self.queues = queues
        self.lane = lane
        self.most = max(1, most)
        self.window: dict[str, int] = {}
        self.read_all: set[str] = set()
        self.next: dict[str, deque[Envelope | Unreadable]] = {}
        self.taken: dict[str, list[str]] = defaultdict(list)
        self.cancelled: set[str] = set()  # read ahead, cancelled while waiting (``WaitingQueues.cancel``)

    def start(self, tenants: list[str]) -> dict[str, Envelope | Unreadable]:
        """Read every tenant's window (one round trip); returns each tenant's head."""
        self._read(tenants)
        return {t: items[0] for t, items in self.next.items() if items}

    def take(self, tenant: str, heads: dict[str, Envelope | Unreadable]) -> None:
        """The round decided on the tenant's head: count it for popping, move on to its next job."""
        self.taken[tenant].append(self.next[tenant].popleft().id)
        if not self.next[tenant] and tenant not in self.read_all:
            self._read([tenant])
        items = self.next[tenant]
        if items:
            heads[tenant] = items[0]
        else:
            heads.pop(tenant, None)

    def _read(self, tenants: list[str]) -> None:
        with self.queues.r.pipeline(transaction=False) as pipe:
            for tenant in tenants:
                size = self.window[tenant] = min(self.most, self.window.get(tenant, 0) * self.GROWTH or self.FIRST)
                skip = len(self.taken.get(tenant, ()))  # taken but not popped yet: still in the list
                pipe.lrange(self.queues.keys.waiting(self.lane, tenant), skip, skip + size - 1)
            pipe.exists(self.queues.keys.cancelled)
            *replies, any_cancelled = pipe.execute()
        read: list[str] = []
        for tenant, raw in zip(tenants, replies, strict=True):
            self.next[tenant] = deque(read_entry(item) for item in raw)
            read += [env.id for env in self.next[tenant] if env.id]
            if len(raw) < self.window[tenant]:  # the whole queue as of now; later arrivals wake the next round
                self.read_all.add(tenant)
        if any_cancelled:  # a second round trip only while some cancelled job may still wait
            self.cancelled |= self.queues.cancelled_of(read)

    def pop_taken(self) -> None:
        dropped = self.cancelled & {job_id for ids in self.taken.values() for job_id in ids}
        for tenant, ids in self.taken.items():
            popped = [env.id for env in self.queues.pop(self.lane, tenant, len(ids))]
            if popped != ids:  # only the leader pops and pushes go to the tail, so this means a bug
                log.error("queue head of %s/%s changed under the scheduler: popped %s, decided on %s",
                          self.lane, tenant, popped, ids)
        self.taken.clear()
        self.queues.forget_cancelled(list(dropped))
