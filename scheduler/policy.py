"""Which waiting jobs to admit next. This is the seam budget-aware admission replaces.

``RoundRobin`` admits everything that waits, lanes in priority order, one job per tenant per turn,
so a tenant with a deep backlog never gets two jobs in ahead of a tenant with one.
"""

from __future__ import annotations

from collections import defaultdict

from shared.config import LANES
from shared.queues import Envelope, WaitingQueues


class RoundRobin:
    def __init__(self) -> None:
        self._turn: dict[str, int] = defaultdict(int)

    def pick(self, queues: WaitingQueues, limit: int) -> list[Envelope]:
        picked: list[Envelope] = []
        for lane in LANES:
            picked += self._pick_lane(queues, lane, limit - len(picked))
            if len(picked) >= limit:
                break
        return picked

    def _pick_lane(self, queues: WaitingQueues, lane: str, limit: int) -> list[Envelope]:
        tenants = queues.active_tenants(lane)
        picked: list[Envelope] = []
        while tenants and len(picked) < limit:
            start = self._turn[lane] % len(tenants)
            order = tenants[start:] + tenants[:start]
            self._turn[lane] += 1
            still_waiting = []
            for tenant in order:
                if len(picked) >= limit:
                    break
                popped = queues.pop(lane, tenant, 1)
                picked += popped
                if popped:
                    still_waiting.append(tenant)
            tenants = still_waiting
        return picked
