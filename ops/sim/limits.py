"""Rate limits as the providers meter them: continuously refilled token buckets per org and model.

A bucket's capacity is the per-minute limit scaled to the burst window (60 s: the whole minute may be
spent at once; 1 s: at most 1/60 of it), and it refills at limit/60 per second. A request is admitted
only if every axis can pay its charge now; otherwise nothing is taken and the 429 names the axis that
binds and how long until it would fit. The clock is injectable so tests can drive time.

Axes: ``requests`` (RPM), ``tokens`` (OpenAI TPM), ``input_tokens`` and ``output_tokens`` (Anthropic
ITPM/OTPM). An axis may go below zero when output is charged as it is produced, as on the real API.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ops.sim.config import LimitsConfig, ModelConfig

Clock = Callable[[], float]
REQUESTS, TOKENS, INPUT, OUTPUT = "requests", "tokens", "input_tokens", "output_tokens"
TOO_LARGE = "too_large"


class Bucket:
    """One axis of one meter; the level is brought up to date lazily on every read."""

    __slots__ = ("limit", "capacity", "rate", "level", "stamp")

    def __init__(self, per_minute: int, burst_window_s: float, now: float) -> None:
        self.limit = per_minute
        self.capacity = per_minute * burst_window_s / 60.0
        self.rate = per_minute / 60.0
        self.level = self.capacity
        self.stamp = now

    def refresh(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        """Seconds until ``amount`` is available (0 when it is now)."""
        missing = amount - self.level
        return missing / self.rate if missing > 0 else 0.0

    def reset_in(self) -> float:
        """Seconds until the bucket is full again: what the providers' ``reset`` headers report."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass(slots=True)
class Charge:
    """What a request costs on one axis: ``take`` is debited, ``need`` must be available (>= take)."""

    axis: str
    take: float
    need: float


@dataclass(slots=True)
class AxisState:
    axis: str
    limit: int
    remaining: int
    reset_s: float


@dataclass(slots=True)
class Decision:
    admitted: bool
    reason: str | None  # the binding axis, or "too_large"
    retry_after: float
    state: list[AxisState]
    requested: int = 0  # tokens asked on the binding axis (for the error message)


class Meter:
    """All buckets of one (org, model)."""

    __slots__ = ("buckets", "limits")

    def __init__(self, limits: LimitsConfig, now: float) -> None:
        self.limits = limits
        self.buckets: dict[str, Bucket] = {}
        per_axis = {REQUESTS: limits.rpm, TOKENS: limits.tpm, INPUT: limits.itpm, OUTPUT: limits.otpm}
        for axis, per_minute in per_axis.items():
            if per_minute:
                self.buckets[axis] = Bucket(per_minute, limits.burst_window_s, now)

    def admit(self, charges: Iterable[Charge], now: float) -> Decision:
        """Take every charge or none of them."""
        charges = [c for c in charges if c.axis in self.buckets]
        for bucket in self.buckets.values():
            bucket.refresh(now)
        for c in charges:
            if c.need > self.buckets[c.axis].capacity:
                return Decision(False, TOO_LARGE, 0.0, self.state(), int(c.need))
        worst, wait = None, 0.0
        for c in charges:
            w = self.buckets[c.axis].wait_for(c.need)
            if w > wait:
                worst, wait = c, w
        if worst is not None:
            return Decision(False, worst.axis, wait, self.state(), int(worst.need))
        for c in charges:
            self.buckets[c.axis].level -= c.take
        return Decision(True, None, 0.0, self.state())

    def debit(self, axis: str, amount: float, now: float) -> None:
        """Charge after admission (output as it is produced); the level may go negative."""
        bucket = self.buckets.get(axis)
        if bucket is not None:
            bucket.refresh(now)
            bucket.level -= amount

    def refund(self, axis: str, amount: float, now: float) -> None:
        bucket = self.buckets.get(axis)
        if bucket is not None:
            bucket.refresh(now)
            bucket.level = min(bucket.capacity, bucket.level + amount)

    def state(self) -> list[AxisState]:
        return [
            AxisState(axis, b.limit, max(0, int(b.level)), b.reset_in()) for axis, b in self.buckets.items()
        ]


class Limiter:
    """The meters of every (org, model) seen so far, created on first use from the model's config."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or time.monotonic
        self.meters: dict[tuple[str, str], Meter] = {}

    def meter(self, org: str, model: str, config: ModelConfig) -> Meter:
        meter = self.meters.get((org, model))
        if meter is None or meter.limits is not config.limits:
            meter = self.meters[(org, model)] = Meter(config.limits, self.clock())
        return meter

    def reset(self) -> None:
        """Forget all meters: every bucket starts full again."""
        self.meters.clear()

    def levels(self) -> list[dict]:
        """Current level of every bucket, for the stats time series."""
        now = self.clock()
        rows = []
        for (org, model), meter in self.meters.items():
            for axis, bucket in meter.buckets.items():
                bucket.refresh(now)
                rows.append({
                    "org": org, "model": model, "axis": axis,
                    "level": round(bucket.level, 1), "capacity": round(bucket.capacity, 1),
                })
        return rows


def admission_charges(
    limits: LimitsConfig, *, prompt: int, uncached_input: int, max_output: int
) -> list[Charge]:
    """What a request is charged when it arrives, by each provider's documented rule.

    OpenAI TPM: prompt estimate plus the output it may produce (n x max_tokens), never refunded.
    Anthropic ITPM: input tokens minus cache reads. OTPM: nothing taken at arrival but the bucket must
    not be empty (``produced``), or max_tokens reserved and corrected at the end (``estimate``).
    """
    charges = [Charge(REQUESTS, 1, 1)]
    if limits.tpm:
        tokens = prompt + max_output if limits.openai_charge == "sum" else max(prompt, max_output)
        charges.append(Charge(TOKENS, tokens, tokens))
    if limits.itpm:
        charges.append(Charge(INPUT, uncached_input, uncached_input))
    if limits.otpm:
        if limits.output_rule == "estimate":
            charges.append(Charge(OUTPUT, max_output, max_output))
        else:
            charges.append(Charge(OUTPUT, 0, 1))
    return charges
