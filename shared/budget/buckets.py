"""Token buckets in Redis: the primitive every level of the budget tree is made of.

Why a token bucket and not GCRA: GCRA keeps one timestamp (the theoretical arrival time) and is
ideal for fixed-cost admissions, but admission control here needs three things that are natural on a
bucket *level* and awkward on a TAT: reservations of variable cost (an estimate of tokens), refunds or
extra charges of the difference once the provider reports real usage (add to the level, capped at
capacity), and pulling the level down to what a provider's rate-limit header says is left (``min``).
A bucket is also what the providers themselves meter with (continuous refill of limit/60 per second up
to a burst capacity), so mirroring their meter keeps what we admit equal to what they accept.

Every decision is one Lua script (one round trip) over keys that share the ``{prefix}`` hash tag, so
it is atomic across any number of api and scheduler processes and stays in one Redis Cluster slot.
The clock is the Redis server's ``TIME`` unless a caller passes ``now`` (tests): all processes, on
any host, refill on the same clock.

Levels are bounded to ``[-capacity, capacity]``: a bucket may go into debt when real usage exceeds
the reservation or when a soft limit is borrowed against, but never by more than one full burst, so
a single bad estimate cannot lock a bucket for longer than ``2 * capacity / rate``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import redis

from shared.keys import Keys
from shared.lua import script
from shared.redis_batch import ScriptCall

EXPIRE_BATCH = 1000


@dataclass(frozen=True)
class Scope:
    """What a bucket limits: its level of the budget tree and whose it is. Code asks the scope, never
    the key (``shared.keys`` builds the key from it, ``Scope.key``)."""

    level: Literal["deployment", "lane", "tenant", "feature"]
    deployment: str | None = None
    axis: str | None = None  # rpm, tpm, itpm, otpm (deployment and lane buckets)
    lane: str | None = None
    tenant: str | None = None
    feature: str | None = None
    limit: Literal["hard", "soft"] = "hard"  # tenant and feature buckets

    def key(self, keys: Keys) -> str:
        return keys.budget_bucket(self.level, *(p for p in (self.lane, self.deployment, self.tenant, self.feature,
                                                             self.axis) if p is not None),
                                  *((self.limit,) if self.level in ("tenant", "feature") else ()))

    def owned_by(self, tenant: str) -> bool:
        """A bucket only ``tenant`` draws from: being blocked there holds up nobody else."""
        return self.level in ("tenant", "feature") and self.tenant == tenant

    def labels(self) -> dict[str, str]:
        """The scope as metric labels (empty where it does not apply)."""
        return {"level": self.level, "deployment": self.deployment or "", "axis": self.axis or "",
                "lane": self.lane or "", "tenant": self.tenant or "", "feature": self.feature or "",
                "limit": self.limit if self.level in ("tenant", "feature") else ""}


@dataclass(frozen=True)
class Bucket:
    """One bucket on a job's path and what this job costs in it.

    ``floor`` is the level a reservation may not go below (the interactive reserve, for other lanes).
    ``borrowable`` marks a soft limit: when the caller allows borrowing it is debited but not checked.
    """

    key: str
    capacity: float
    rate: float
    cost: float
    floor: float = 0.0
    borrowable: bool = False
    scope: Scope | None = None

    def never_fits(self) -> bool:
        """True when even a full bucket could not pay this cost above the floor."""
        return self.cost > self.capacity - self.floor


@dataclass(frozen=True)
class Admission:
    """The answer to one reservation: admitted, or which bucket blocked and for how long."""

    ok: bool
    blocked_by: str | None = None
    wait_s: float = 0.0

    @property
    def never(self) -> bool:
        """The job can never fit in ``blocked_by`` (bigger than its capacity above the floor)."""
        return not self.ok and math.isinf(self.wait_s)


@dataclass(frozen=True)
class Reservation:
    id: str
    charges: dict[str, float]
    expires_at: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _admission(reply: Sequence[Any]) -> Admission:
    if int(reply[0]) == 1:
        return Admission(ok=True)
    return Admission(ok=False, blocked_by=_text(reply[1]), wait_s=float(_text(reply[2])))


class BudgetStore:
    """Reserve, settle, release and read buckets; one Lua call per operation."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.r = client
        self.keys = keys
        self._reserve = client.register_script(script("budget_reserve"))
        self._settle = client.register_script(script("budget_settle"))
        self._expire = client.register_script(script("budget_expire"))
        self._pull_down = client.register_script(script("budget_pull_down"))
        self._levels = client.register_script(script("budget_levels"))

    @property
    def _record_keys(self) -> list[str]:
        return [self.keys.budget_reservations, self.keys.budget_expiries]

    def _reserve_call(self, reservation_id: str, buckets: Sequence[Bucket], ttl_s: float,
                      allow_borrow: bool, now: float | None) -> tuple[list[str], list[str]]:
        if len({b.key for b in buckets}) != len(buckets):
            raise ValueError(f"a bucket appears twice on one path: {[b.key for b in buckets]}")
        args = [_now_arg(now), reservation_id, repr(float(ttl_s)), "1" if allow_borrow else "0"]
        for b in buckets:
            args += [repr(float(b.capacity)), repr(float(b.rate)), repr(float(b.cost)),
                     repr(float(b.floor)), "1" if b.borrowable else "0"]
        return self._record_keys + [b.key for b in buckets], args

    def try_reserve(self, reservation_id: str, buckets: Sequence[Bucket], *, ttl_s: float,
                    allow_borrow: bool = False, now: float | None = None) -> Admission:
        """Debit every bucket or none. Reserving an id that is already held is a no-op that says ok."""
        keys, args = self._reserve_call(reservation_id, buckets, ttl_s, allow_borrow, now)
        return _admission(self._reserve(keys=keys, args=args))

    def try_reserve_many(self, requests: Iterable[tuple[str, Sequence[Bucket]]], *, ttl_s: float,
                         allow_borrow: bool = False, now: float | None = None) -> list[Admission]:
        """Several independent reservations in one pipeline (each is still its own atomic decision)."""
        with self.r.pipeline(transaction=False) as pipe:
            for reservation_id, buckets in requests:
                keys, args = self._reserve_call(reservation_id, buckets, ttl_s, allow_borrow, now)
                self._reserve(keys=keys, args=args, client=pipe)
            return [_admission(reply) for reply in pipe.execute()]

    def settle(self, reservation_id: str, actual: Mapping[str, float], *, now: float | None = None) -> bool:
        """Replace the charges with real usage; buckets missing from ``actual`` are refunded in full.

        False, and nothing changes, when the reservation is unknown, expired or already settled, so a
        redelivered attempt never refunds twice.
        """
        return self.settle_call(reservation_id, actual, now=now).run()

    def settle_call(self, reservation_id: str, actual: Mapping[str, float], *,
                    now: float | None = None) -> ScriptCall:
        """``settle`` as a script call to send in a batch with others."""
        args = [_now_arg(now), reservation_id]
        for key, cost in actual.items():
            args += [key, repr(float(cost))]
        return ScriptCall(self._settle, self._record_keys + list(actual), args, lambda reply: int(reply) == 1)

    def release(self, reservation_id: str, *, now: float | None = None) -> bool:
        """Refund a reservation in full (the job was cancelled or never sent)."""
        return self.settle(reservation_id, {}, now=now)

    def expire(self, now: float | None = None) -> int:
        """Drop reservations past their expiry without refund; returns how many."""
        dropped = 0
        while True:
            n = int(self._expire(keys=self._record_keys, args=[_now_arg(now), EXPIRE_BATCH]))
            dropped += n
            if n < EXPIRE_BATCH:
                return dropped

    def pull_down(self, key: str, remaining: float, capacity: float, rate: float, *,
                  now: float | None = None) -> float:
        """Header sync for one bucket: level = min(level refilled to now, remaining). Returns the level."""
        return self.pull_down_many([(key, remaining, capacity, rate)], now=now)[key]

    def pull_down_many(self, targets: Sequence[tuple[str, float, float, float]], *,
                       now: float | None = None) -> dict[str, float]:
        """``pull_down`` for several buckets (key, remaining, capacity, rate) in one call."""
        call = self.pull_down_call(targets, now=now)
        return call.run() if call is not None else {}

    def pull_down_call(self, targets: Sequence[tuple[str, float, float, float]], *,
                       now: float | None = None) -> ScriptCall | None:
        """``pull_down_many`` as a script call to send in a batch with others (None: no targets)."""
        if not targets:
            return None
        args = [_now_arg(now)]
        for _, remaining, capacity, rate in targets:
            args += [repr(float(remaining)), repr(float(capacity)), repr(float(rate))]
        keys = [t[0] for t in targets]
        return ScriptCall(self._pull_down, keys,
                          args, lambda reply: {k: float(_text(v)) for k, v in zip(keys, reply, strict=True)})

    def levels(self, buckets: Iterable[str | Bucket], *, now: float | None = None) -> dict[str, float]:
        """Levels refilled to now, changing nothing. A bucket never used is full: given a ``Bucket``
        that is its capacity; given only a key, it is left out of the answer."""
        items = list(buckets)
        if not items:
            return {}
        keys = [b.key if isinstance(b, Bucket) else b for b in items]
        reply = self._levels(keys=keys, args=[_now_arg(now)])
        out: dict[str, float] = {}
        for item, key, value in zip(items, keys, reply, strict=True):
            text = _text(value)
            if text:
                out[key] = float(text)
            elif isinstance(item, Bucket):
                out[key] = float(item.capacity)
        return out

    def reservations(self) -> list[Reservation]:
        """Every open reservation (for the admin endpoint); expired ones until ``expire`` drops them."""
        raw = self.r.hgetall(self.keys.budget_reservations)
        out = []
        for rid, record in raw.items():
            data = orjson.loads(record)
            charges = {k: float(v) for k, v in (data.get("c") or {}).items()}
            out.append(Reservation(id=_text(rid), charges=charges, expires_at=float(data["x"])))
        return sorted(out, key=lambda r: r.expires_at)

    def reserved_totals(self) -> dict[str, tuple[int, float]]:
        """Per bucket key: how many open reservations hold it and their total charge."""
        totals: dict[str, tuple[int, float]] = {}
        for resv in self.reservations():
            for key, cost in resv.charges.items():
                count, total = totals.get(key, (0, 0.0))
                totals[key] = (count + 1, total + cost)
        return totals
