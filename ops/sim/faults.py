"""Injected faults, switchable at run time through ``/sim/faults``.

Kinds (each optionally scoped to a ``model`` and/or ``key``, fired with probability ``rate`` (default
1), within a window ``after_s``..``after_s + duration_s`` counted from when the rule was installed):

- ``error``: answer ``status`` (500 default; 502, 503, 529 ...) in the provider's error format.
- ``outage``: like error (503 default), meant with a window: the provider is down for a while.
- ``storm``: a 429 that the meter did not cause, with ``retry-after: retry_after_s``.
- ``slowdown``: latency multiplied by ``factor`` (composes with the other kinds).
- ``hang``: admit, then send nothing for ``hang_s`` (past any sane client timeout).
- ``reset``: admit, then drop the TCP connection with a reset.
- ``malformed``: admit, then answer 200 with a body that is not valid JSON.
- ``cut``: admit, then reset the connection after ``after_events`` events of a streamed answer (a
  provider failing mid-stream); a call that does not stream is reset before it is answered.

Errors, outages and storms are decided before the meter, so they cost no quota; hangs, resets and
malformed bodies happen after admission and are charged like a real request that went wrong late.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from ops.sim.config import FaultConfig
from ops.sim.limits import Clock

DEFAULT_STATUS = {"error": 500, "outage": 503, "storm": 429}
EARLY = frozenset({"error", "outage", "storm"})


@dataclass(slots=True)
class Fault:
    id: int
    config: FaultConfig
    start_at: float
    end_at: float | None

    def applies(self, now: float, model: str, key: str) -> bool:
        c = self.config
        if c.model is not None and c.model != model:
            return False
        if c.key is not None and c.key != key:
            return False
        return self.start_at <= now and (self.end_at is None or now < self.end_at)

    def describe(self, now: float) -> dict:
        data = self.config.model_dump(exclude_none=True)
        data["id"] = self.id
        data["active"] = self.start_at <= now and (self.end_at is None or now < self.end_at)
        if self.end_at is not None:
            data["ends_in_s"] = round(max(0.0, self.end_at - now), 3)
        return data


@dataclass(slots=True)
class Outcome:
    """What the faults do to one request; ``kind`` None means only a slowdown (or nothing)."""

    kind: str | None = None
    status: int = 200
    slowdown: float = 1.0
    hang_s: float = 0.0
    after_events: int = 0
    retry_after_s: float = 1.0
    fired: list[str] = field(default_factory=list)

    @property
    def early(self) -> bool:
        return self.kind in EARLY


class FaultBoard:
    def __init__(self, clock: Clock, seed: int = 0) -> None:
        self.clock = clock
        self.rng = random.Random(seed)
        self.faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, configs: list[FaultConfig]) -> list[Fault]:
        now = self.clock()
        added = []
        for c in configs:
            end = now + c.after_s + c.duration_s if c.duration_s is not None else None
            added.append(Fault(next(self._ids), c, now + c.after_s, end))
        self.faults.extend(added)
        return added

    def remove(self, fault_id: int) -> bool:
        before = len(self.faults)
        self.faults = [f for f in self.faults if f.id != fault_id]
        return len(self.faults) != before

    def clear(self) -> None:
        self.faults = []

    def describe(self) -> list[dict]:
        now = self.clock()
        return [f.describe(now) for f in self.faults]

    def decide(self, model: str, key: str) -> Outcome | None:
        """Roll every applicable rule in order; the first terminal kind wins, slowdowns multiply."""
        if not self.faults:
            return None
        now = self.clock()
        outcome: Outcome | None = None
        for fault in self.faults:
            c = fault.config
            if not fault.applies(now, model, key):
                continue
            if c.rate is not None and self.rng.random() >= c.rate:
                continue
            outcome = outcome or Outcome()
            outcome.fired.append(c.kind)
            if c.kind == "slowdown":
                outcome.slowdown *= c.factor
            elif outcome.kind is None:
                outcome.kind = c.kind
                outcome.status = c.status or DEFAULT_STATUS.get(c.kind, 200)
                outcome.hang_s = c.hang_s
                outcome.after_events = c.after_events
                outcome.retry_after_s = c.retry_after_s
        return outcome
