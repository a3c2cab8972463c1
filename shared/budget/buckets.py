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

Dollar budgets are *window buckets* in the same reservations: a limit in USD for one calendar day or
month, no refill, checked against what was spent plus what calls in flight hold (their worst case),
settled to the attempt's real cost, and given back when a call never reports (its SQL record, if it
ever has one, is what it is billed). A blocked window bucket fits again when its window ends. Redis
holds a window bucket only once it was seeded from the SQL store (``seed``): one Redis forgot is
rebuilt from the usage rollups, never taken as unspent. See ``shared/lua/budget_lib.lua``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
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
    the key (``shared.keys`` builds the key from it, ``Scope.key``).

    ``spend``: a dollar budget of a tenant, a tenant's feature, or a key (``key_id``), for one ``window``
    (day or month) named by ``window_id``."""

    level: Literal["deployment", "lane", "tenant", "feature", "key", "spend"]
    deployment: str | None = None
    axis: str | None = None  # rpm, tpm, itpm, otpm (deployment, lane and key buckets)
    lane: str | None = None
    tenant: str | None = None
    feature: str | None = None
    limit: Literal["hard", "soft"] = "hard"  # tenant and feature buckets
    key_id: int | None = None  # key buckets, and a key's dollar budget
    window: str | None = None  # day or month (spend)
    window_id: str | None = None  # 2026-12-01, 2026-12 (spend)

    def key(self, keys: Keys) -> str:
        if self.level == "spend":
            return keys.spend_bucket(self.owner, *self._owner_parts(), str(self.window), str(self.window_id))
        if self.level == "key":
            return keys.budget_bucket("key", str(self.key_id), str(self.axis))
        return keys.budget_bucket(self.level, *(p for p in (self.lane, self.deployment, self.tenant, self.feature,
                                                             self.axis) if p is not None),
                                  *((self.limit,) if self.level in ("tenant", "feature") else ()))

    @property
    def owner(self) -> Literal["tenant", "feature", "key"]:
        """Whose dollar budget a ``spend`` scope is."""
        return "key" if self.key_id is not None else "feature" if self.feature else "tenant"

    def _owner_parts(self) -> tuple[str, ...]:
        if self.key_id is not None:
            return (str(self.key_id),)
        return (str(self.tenant), str(self.feature)) if self.feature else (str(self.tenant),)

    def owned_by(self, tenant: str) -> bool:
        """A bucket only ``tenant`` draws from: being blocked there holds up nobody else."""
        return self.level in ("tenant", "feature", "key", "spend") and self.tenant == tenant

    def labels(self) -> dict[str, str]:
        """The scope as metric labels (empty where it does not apply)."""
        return {"level": self.level, "deployment": self.deployment or "", "axis": self.axis or "",
                "lane": self.lane or "", "tenant": self.tenant or "", "feature": self.feature or "",
                "limit": self.limit if self.level in ("tenant", "feature") else "",
                "key": "" if self.key_id is None else str(self.key_id), "window": self.window or ""}

    def to_json(self) -> str:
        return orjson.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None}).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> Scope | None:
        """The scope a window bucket was seeded with (its ``meta``); None when unreadable."""
        try:
            return cls(**orjson.loads(raw))
        except (orjson.JSONDecodeError, TypeError, ValueError):
            return None


@dataclass(frozen=True)
class Bucket:
    """One bucket on a job's path and what this job costs in it.

    ``floor`` is the level a reservation may not go below (the interactive reserve, for other lanes).
    ``borrowable`` marks a soft limit: when the caller allows borrowing it is debited but not checked.
    ``headroom`` marks a deployment bucket: ``capacity``, ``rate`` and ``floor`` are at this (the
    configured) headroom, and Redis scales them to the headroom the bucket adapted to (``budget_sync``).
    ``interactive``: ``feed``, an interactive reservation, counted in the bucket's interactive meter;
    ``floor``, ``floor`` is the interactive reserve's most, and only what the meter says the interactive
    lane needs is kept (``ReserveRule``).
    ``window_end`` (epoch seconds) marks a window bucket: a dollar budget whose ``capacity`` is its limit
    in USD and ``cost`` this job's worst case; ``enforced`` False: a soft budget, debited (for its
    alerts), never checked.
    """

    key: str
    capacity: float
    rate: float
    cost: float
    floor: float = 0.0
    borrowable: bool = False
    scope: Scope | None = None
    window_end: float | None = None
    enforced: bool = True
    headroom: float | None = None
    interactive: Literal["", "feed", "floor"] = ""

    @property
    def is_window(self) -> bool:
        return self.window_end is not None

    @property
    def flags(self) -> str:
        """How budget_reserve.lua reads the bucket (see its header)."""
        return ("b" if self.borrowable else "") + ("w" if self.is_window else "") + ("" if self.enforced else "s") \
            + ("a" if self.headroom else "") + {"": "", "feed": "i", "floor": "r"}[self.interactive]

    def never_fits(self) -> bool:
        """True when even a full bucket could not pay this cost above the floor."""
        if not self.enforced:
            return False
        return self.cost > self.capacity - self.floor


@dataclass(frozen=True)
class ReserveRule:
    """How much of a deployment bucket the interactive reserve keeps from other lanes: ``window_s``
    seconds of the interactive lane's recent arrival rate (averaged over ``tau_s``) plus its largest
    recent job, at least ``least`` of the bucket's capacity, at most the bucket's floor."""

    window_s: float = 5.0
    least: float = 0.02
    tau_s: float = 10.0

    def args(self) -> list[str]:
        return [repr(float(self.tau_s)), repr(float(self.window_s)), repr(float(self.least))]


@dataclass(frozen=True)
class SyncTarget:
    """One deployment bucket in a header sync (``budget_sync.lua``): what the provider says is left
    (None: the headers do not say), the provider's bucket size, the bucket at the configured headroom,
    and the range its headroom adapts in."""

    key: str
    remaining: float | None
    provider_capacity: float
    capacity: float
    rate: float
    headroom: float
    least: float
    most: float

    def args(self) -> list[str]:
        return ["" if self.remaining is None else repr(float(self.remaining)),
                *(repr(float(v)) for v in (self.provider_capacity, self.capacity, self.rate, self.headroom,
                                            self.least, self.most))]


@dataclass(frozen=True)
class Admission:
    """The answer to one reservation: admitted, or which bucket blocked and for how long (for a dollar
    budget, with what it has spent and its limit), or which dollar budgets must be seeded first."""

    ok: bool
    blocked_by: str | None = None
    wait_s: float = 0.0
    spent: float | None = None
    limit: float | None = None
    unseeded: tuple[str, ...] = ()

    @property
    def never(self) -> bool:
        """The job can never fit in ``blocked_by`` (bigger than its capacity above the floor)."""
        return not self.ok and math.isinf(self.wait_s)


@dataclass(frozen=True)
class Reservation:
    id: str
    charges: dict[str, float]
    expires_at: float
    dollars: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowSpend:
    """What a settlement did to one dollar budget: its settled USD before and after, its limit, its scope."""

    key: str
    before: float
    after: float
    cap: float
    scope: Scope | None


@dataclass(frozen=True)
class Settled:
    """A settlement's answer: whether the reservation was there to settle, and the dollar budgets it moved."""

    ok: bool
    windows: tuple[WindowSpend, ...] = ()


@dataclass(frozen=True)
class Seed:
    """A dollar budget to create in Redis: its bucket, what the store says was spent, its scope."""

    bucket: Bucket
    spent: float


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _now_arg(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _number(value: Any) -> float | None:
    text = _text(value)
    return float(text) if text else None


def _admission(reply: Sequence[Any]) -> Admission:
    code = int(reply[0])
    if code == 1:
        return Admission(ok=True)
    if code == 2:
        return Admission(ok=False, unseeded=tuple(_text(key) for key in reply[1:]))
    return Admission(ok=False, blocked_by=_text(reply[1]), wait_s=float(_text(reply[2])), spent=_number(reply[3]),
                     limit=_number(reply[4]))


def _settled(reply: Any) -> Settled:
    if not isinstance(reply, list):
        return Settled(False)
    rest = reply[1:]
    windows = tuple(WindowSpend(_text(rest[i]), float(_text(rest[i + 1])), float(_text(rest[i + 2])),
                                _number(rest[i + 3]) or 0.0, Scope.from_json(rest[i + 4]) if rest[i + 4] else None)
                    for i in range(0, len(rest), 5))
    return Settled(True, windows)


class BudgetStore:
    """Reserve, settle, release and read buckets; one Lua call per operation."""

    def __init__(self, client: redis.Redis, keys: Keys, reserve: ReserveRule | None = None) -> None:
        self.r = client
        self.keys = keys
        self.reserve = reserve or ReserveRule()
        self._reserve = client.register_script(script("budget_reserve"))
        self._settle = client.register_script(script("budget_settle"))
        self._expire = client.register_script(script("budget_expire"))
        self._pull_down = client.register_script(script("budget_pull_down"))
        self._sync = client.register_script(script("budget_sync"))
        self._levels = client.register_script(script("budget_levels"))
        self._seed = client.register_script(script("budget_seed"))

    @property
    def _record_keys(self) -> list[str]:
        return [self.keys.budget_reservations, self.keys.budget_expiries]

    def _reserve_call(self, reservation_id: str, buckets: Sequence[Bucket], ttl_s: float,
                      allow_borrow: bool, now: float | None) -> tuple[list[str], list[str]]:
        if len({b.key for b in buckets}) != len(buckets):
            raise ValueError(f"a bucket appears twice on one path: {[b.key for b in buckets]}")
        args = [_now_arg(now), reservation_id, repr(float(ttl_s)), "1" if allow_borrow else "0",
                *self.reserve.args()]
        for b in buckets:
            args += [repr(float(b.capacity)), repr(float(b.rate)), repr(float(b.cost)),
                     repr(float(b.floor)), b.flags, "" if b.window_end is None else repr(float(b.window_end)),
                     "" if b.headroom is None else repr(float(b.headroom))]
        return self._record_keys + [b.key for b in buckets], args

    def try_reserve(self, reservation_id: str, buckets: Sequence[Bucket], *, ttl_s: float,
                    allow_borrow: bool = False, now: float | None = None) -> Admission:
        """Debit every bucket or none. Reserving an id that is already held is a no-op that says ok."""
        admission: Admission = self.reserve_call(reservation_id, buckets, ttl_s=ttl_s, allow_borrow=allow_borrow,
                                                 now=now).run()
        return admission

    def reserve_call(self, reservation_id: str, buckets: Sequence[Bucket], *, ttl_s: float,
                     allow_borrow: bool = False, now: float | None = None) -> ScriptCall:
        """``try_reserve`` as a script call to send in a batch with others; its reply is an ``Admission``."""
        keys, args = self._reserve_call(reservation_id, buckets, ttl_s, allow_borrow, now)
        return ScriptCall(self._reserve, keys, args, _admission)

    def try_reserve_many(self, requests: Iterable[tuple[str, Sequence[Bucket]]], *, ttl_s: float,
                         allow_borrow: bool = False, now: float | None = None) -> list[Admission]:
        """Several independent reservations in one pipeline (each is still its own atomic decision)."""
        with self.r.pipeline(transaction=False) as pipe:
            for reservation_id, buckets in requests:
                keys, args = self._reserve_call(reservation_id, buckets, ttl_s, allow_borrow, now)
                self._reserve(keys=keys, args=args, client=pipe)
            return [_admission(reply) for reply in pipe.execute()]

    def settle(self, reservation_id: str, actual: Mapping[str, float], *, cost_usd: float = 0.0,
               now: float | None = None) -> bool:
        """Replace the charges with real usage; token buckets missing from ``actual`` are refunded in
        full, and every dollar budget held is charged ``cost_usd`` instead of its worst case.

        False, and nothing changes, when the reservation is unknown, expired or already settled, so a
        redelivered attempt never refunds or charges twice.
        """
        settled: Settled = self.settle_call(reservation_id, actual, cost_usd=cost_usd, now=now).run()
        return settled.ok

    def settle_call(self, reservation_id: str, actual: Mapping[str, float], *, cost_usd: float = 0.0,
                    now: float | None = None) -> ScriptCall:
        """``settle`` as a script call to send in a batch with others; its reply is a ``Settled``."""
        args = [_now_arg(now), reservation_id, repr(float(cost_usd))]
        for key, cost in actual.items():
            args += [key, repr(float(cost))]
        return ScriptCall(self._settle, self._record_keys + list(actual), args, _settled)

    def release(self, reservation_id: str, *, now: float | None = None) -> bool:
        """Refund a reservation in full (the job was cancelled or never sent)."""
        return self.settle(reservation_id, {}, now=now)

    def seed(self, seeds: Sequence[Seed]) -> int:
        """Create the dollar budgets Redis does not hold, from what the store says they spent (one call)."""
        if not seeds:
            return 0
        args: list[str] = []
        for s in seeds:
            scope = s.bucket.scope.to_json() if s.bucket.scope is not None else ""
            args += [repr(float(s.spent)), repr(float(s.bucket.capacity)), repr(float(s.bucket.window_end or 0)),
                     scope]
        return int(self._seed(keys=[s.bucket.key for s in seeds], args=args))

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

    def sync_call(self, targets: Sequence[SyncTarget], *, refused: bool = False,
                  now: float | None = None) -> ScriptCall | None:
        """Header sync of a deployment's buckets, their headroom adapting (``budget_sync.lua``), as a
        script call to send in a batch with others (None: no targets). ``refused``: a 429 came back."""
        if not targets:
            return None
        args = [_now_arg(now), "1" if refused else "0"]
        for t in targets:
            args += t.args()
        keys = [t.key for t in targets]
        return ScriptCall(self._sync, keys, args,
                          lambda reply: {k: float(_text(v)) for k, v in zip(keys, reply, strict=True)})

    def sync(self, targets: Sequence[SyncTarget], *, refused: bool = False,
             now: float | None = None) -> dict[str, float]:
        """``sync_call`` sent now; returns the new levels."""
        call = self.sync_call(targets, refused=refused, now=now)
        return call.run() if call is not None else {}

    def headrooms(self, keys: Sequence[str]) -> dict[str, float]:
        """The headroom each deployment bucket runs at now; a bucket never synced is left out."""
        with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "hr")
            values = pipe.execute()
        return {key: float(v) for key, v in zip(keys, values, strict=True) if v is not None}

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

    def spent(self, keys: Sequence[str]) -> dict[str, float]:
        """What each dollar budget (window bucket) has spent or holds for calls in flight; a bucket Redis
        does not hold (not seeded yet) is left out."""
        with self.r.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hget(key, "spent")
            values = pipe.execute()
        return {key: float(v) for key, v in zip(keys, values, strict=True) if v is not None}

    def reservations(self) -> list[Reservation]:
        """Every open reservation (for the admin endpoint); expired ones until ``expire`` drops them."""
        raw = self.r.hgetall(self.keys.budget_reservations)
        out = []
        for rid, record in raw.items():
            data = orjson.loads(record)
            charges = {k: float(v) for k, v in (data.get("c") or {}).items()}
            dollars = {k: float(v) for k, v in (data.get("w") or {}).items()} if isinstance(data.get("w"), dict) else {}
            out.append(Reservation(id=_text(rid), charges=charges, expires_at=float(data["x"]), dollars=dollars))
        return sorted(out, key=lambda r: r.expires_at)

    def reserved_totals(self) -> dict[str, tuple[int, float]]:
        """Per bucket key: how many open reservations hold it and their total charge."""
        totals: dict[str, tuple[int, float]] = {}
        for resv in self.reservations():
            for key, cost in {**resv.charges, **resv.dollars}.items():
                count, total = totals.get(key, (0, 0.0))
                totals[key] = (count + 1, total + cost)
        return totals
