"""Usage rollups: what every tenant, feature, model, deployment and key used and cost, per hour and per day.

Kept as attempts are recorded, never rebuilt by scanning the attempts table: ``record_attempt`` hands
each recorded attempt's figures to ``add`` and, when the transaction commits, one upsert (a statement
with one parameter set per row touched, ``ON CONFLICT DO UPDATE`` adding to the counts) writes them all
in that same transaction. A worker group-commits up to 64 attempts per transaction: still one statement,
with the rows summed first (PostgreSQL refuses to update a row twice in one statement) and sorted (so two
transactions lock shared rows in the same order and never deadlock). A redelivered attempt is refused
by the attempt record's unique key before it reaches here: nothing is counted twice.

Each attempt counts in two rows: its UTC hour (``h``) and its day in ``billing.timezone`` (``d``), so a
day query reads one row per day and group, whatever the traffic. Budgets are rebuilt from the day rows
(``spent_usd``), and ``reconcile`` recomputes both from the attempts to show any difference.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache, partial
from typing import Any, Literal, cast

from sqlalchemy import BigInteger, Float, Table, delete, event, func, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from shared.db.models import ApiKey, Attempt, Job, UsageRollup
from shared.db.prepared import Prepared

_ROLLUPS = cast(Table, UsageRollup.__table__)
KEY = ("granularity", "bucket_start", "tenant_id", "feature", "model", "deployment", "key_id")
COUNTS = ("requests", "succeeded", "attempts", "failed_attempts", "input_tokens", "cached_tokens",
          "cache_write_tokens", "output_tokens", "reasoning_tokens")
MONEY = ("cost_usd", "failed_cost_usd", "cache_savings_usd", "routing_savings_usd")
MEASURES = COUNTS + MONEY
GROUPS = {"tenant": "tenant_id", "feature": "feature", "model": "model", "deployment": "deployment", "key": "key_id"}
Granularity = Literal["hour", "day"]
_CODE: dict[str, str] = {"hour": "h", "day": "d"}
_PENDING = "gateway.usage.pending"
REPORT_WORK_MEM = "64MB"  # session.info: rollup rows waiting for the commit
RowKey = tuple[str, datetime, str, str, str, str, int]


@dataclass(frozen=True)
class AttemptUsage:
    """What an attempt used and cost beyond its row's ``tokens_in``/``tokens_out``/``cost_usd``: the model
    as priced, the kinds of tokens priced apart, and what provider caching and routing saved (the
    baseline minus the cost; negative when they cost more, e.g. a cache write never read)."""

    model: str = ""
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_savings_usd: float = 0.0
    routing_savings_usd: float = 0.0


@dataclass(frozen=True)
class RecordedAttempt:
    """One attempt as the rollups count it: whose (from its job's row), where, when, and its figures."""

    tenant_id: str
    feature: str
    key_id: int | None
    deployment: str
    finished_at: datetime
    status: str
    ended_job: bool
    tokens_in: int
    tokens_out: int
    cost_usd: float
    usage: AttemptUsage


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime, zone: tzinfo) -> datetime:
    """The start of ``moment``'s calendar day in ``zone``, as a UTC time."""
    return moment.astimezone(zone).replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def measures_of(attempt: RecordedAttempt) -> dict[str, float]:
    failed = attempt.status != "succeeded"
    u = attempt.usage
    return {
        "requests": int(attempt.ended_job), "succeeded": int(attempt.ended_job and not failed), "attempts": 1,
        "failed_attempts": int(failed), "input_tokens": attempt.tokens_in, "cached_tokens": u.cached_tokens,
        "cache_write_tokens": u.cache_write_tokens, "output_tokens": attempt.tokens_out,
        "reasoning_tokens": u.reasoning_tokens, "cost_usd": attempt.cost_usd,
        "failed_cost_usd": attempt.cost_usd if failed else 0.0, "cache_savings_usd": u.cache_savings_usd,
        "routing_savings_usd": u.routing_savings_usd,
    }


def row_keys(attempt: RecordedAttempt, zone: tzinfo) -> tuple[RowKey, RowKey]:
    """The attempt's hour row and day row."""
    dims = (attempt.tenant_id, attempt.feature, attempt.usage.model, attempt.deployment, attempt.key_id or 0)
    return (("h", hour_of(attempt.finished_at), *dims), ("d", day_of(attempt.finished_at, zone), *dims))


def add(session: Session, attempt: RecordedAttempt, zone: tzinfo) -> None:
    """Count a recorded attempt in its rows; they are written when ``session`` commits (``_write_pending``)."""
    pending: dict[RowKey, dict[str, float]] = session.info.setdefault(_PENDING, {})
    figures = measures_of(attempt)
    for key in row_keys(attempt, zone):
        row = pending.get(key)
        if row is None:
            pending[key] = dict(figures)
        else:
            for name, value in figures.items():
                row[name] += value


@lru_cache(maxsize=4)
def _upsert(dialect: str) -> Any:
    """The one statement that writes a transaction's rows: insert, or add to the row already there."""
    insert: Any = {"sqlite": sqlite_insert, "postgresql": pg_insert}[dialect](_ROLLUPS)
    return insert.on_conflict_do_update(
        index_elements=list(KEY), set_={name: _ROLLUPS.c[name] + insert.excluded[name] for name in MEASURES})


_UPSERTS = {name: Prepared(partial(_upsert, name)) for name in ("sqlite", "postgresql")}  # run on the cursor


@event.listens_for(Session, "before_commit")
def _write_pending(session: Session) -> None:
    """Write what ``add`` collected, in the transaction that recorded the attempts (see the module docstring)."""
    pending: dict[RowKey, dict[str, float]] | None = session.info.pop(_PENDING, None)
    if not pending:
        return
    rows = [{**dict(zip(KEY, key, strict=True)), **figures} for key, figures in sorted(pending.items())]
    _UPSERTS[session.get_bind().dialect.name].many(session, rows)


@event.listens_for(Session, "after_soft_rollback")
def _forget_pending(session: Session, _previous: Any) -> None:
    """A rolled-back transaction recorded nothing: its rows are dropped with it."""
    session.info.pop(_PENDING, None)


# -- reading ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UsageQuery:
    """What ``GET /v1/usage`` asks: rows with ``start <= bucket_start < end``, by these groups."""

    start: datetime
    end: datetime
    granularity: Granularity
    group_by: tuple[str, ...]
    tenant: str | None = None  # None: every tenant (the operators' key)


def bucket_floor(moment: datetime, granularity: Granularity, zone: tzinfo) -> datetime:
    return hour_of(moment) if granularity == "hour" else day_of(moment, zone)


def report(session: Session, query: UsageQuery, limit: int) -> list[tuple[Any, ...]]:
    """One tuple per bucket and group, oldest first: bucket start, the groups (a key by its public id), then
    the ``MEASURES``; at most ``limit`` (+1 to tell the caller it was cut). Sums come back as PostgreSQL
    ``bigint`` and ``double precision``, not ``numeric``: a month's report is thousands of rows, and
    decoding a Decimal per cell would cost more than the query."""
    groups = [_ROLLUPS.c[GROUPS[g]] for g in query.group_by]
    sums = [sql_cast(func.sum(_ROLLUPS.c[name]), Float if name in MONEY else BigInteger) for name in MEASURES]
    stmt = (select(_ROLLUPS.c.bucket_start, *groups, *sums)
            .where(_ROLLUPS.c.granularity == _CODE[query.granularity], _ROLLUPS.c.bucket_start >= query.start,
                   _ROLLUPS.c.bucket_start < query.end)
            .group_by(_ROLLUPS.c.bucket_start, *groups)
            .order_by(_ROLLUPS.c.bucket_start, *groups).limit(limit + 1))
    if query.tenant is not None:
        stmt = stmt.where(_ROLLUPS.c.tenant_id == query.tenant)
    if session.get_bind().dialect.name == "postgresql":  # a month of every tenant's day rows is ~70k rows to
        session.execute(text(f"SET LOCAL work_mem = '{REPORT_WORK_MEM}'"))  # group: in memory, not sorted on disk
    rows = [tuple(row) for row in session.execute(stmt)]
    if "key" in query.group_by:
        at = 1 + query.group_by.index("key")
        names = key_names(session, {row[at] for row in rows})
        rows = [(*row[:at], names.get(row[at]), *row[at + 1:]) for row in rows]
    return rows


def key_names(session: Session, ids: Iterable[int]) -> dict[int, str]:
    """Key id -> its public id (what the management API and the usage API call it)."""
    wanted = [i for i in ids if i]
    if not wanted:
        return {}
    return dict(session.execute(select(ApiKey.id, ApiKey.public_id).where(ApiKey.id.in_(wanted))).tuples().all())


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back what it was given without a zone when read through an aggregate query."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def spent_usd(session: Session, *, tenant: str, feature: str | None, key_id: int | None,
              start: datetime, end: datetime) -> float:
    """What a budget's scope spent from ``start`` to ``end`` (whole days in ``billing.timezone``), from the
    day rows: how a dollar budget is rebuilt when Redis has forgotten it."""
    stmt = select(func.coalesce(func.sum(_ROLLUPS.c.cost_usd), 0.0)).where(
        _ROLLUPS.c.granularity == "d", _ROLLUPS.c.bucket_start >= start, _ROLLUPS.c.bucket_start < end,
        _ROLLUPS.c.tenant_id == tenant)
    if feature is not None:
        stmt = stmt.where(_ROLLUPS.c.feature == feature)
    if key_id is not None:
        stmt = stmt.where(_ROLLUPS.c.key_id == key_id)
    return float(session.execute(stmt).scalar_one() or 0.0)


def purge(session: Session, before: datetime) -> int:
    """Drop the rows of buckets that started before ``before`` (``retention.usage_days``)."""
    result: Any = session.execute(delete(UsageRollup).where(UsageRollup.granularity.in_(("h", "d")),
                                                            UsageRollup.bucket_start < before))
    return int(result.rowcount or 0)


# -- reconciling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Difference:
    """A rollup row that does not match what its attempts add up to (``expected``), per measure."""

    key: RowKey
    measure: str
    expected: float
    stored: float


def recorded_attempts(session: Session, start: datetime, end: datetime) -> Iterator[RecordedAttempt]:
    """Every finished attempt from ``start`` to ``end``, with its job's tenant, feature and key, streamed.
    Attempts recorded before the rollups existed (no ``model``) are left out."""
    stmt = (select(Job.tenant_id, Job.feature, Job.key_id, Attempt.deployment, Attempt.finished_at,
                   Attempt.status, Attempt.ended_job, Attempt.tokens_in, Attempt.tokens_out, Attempt.cost_usd,
                   Attempt.model, Attempt.cached_tokens, Attempt.cache_write_tokens, Attempt.reasoning_tokens,
                   Attempt.cache_savings_usd, Attempt.routing_savings_usd)
            .join(Job, Job.id == Attempt.job_id)
            .where(Attempt.finished_at >= start, Attempt.finished_at < end, Attempt.model.is_not(None),
                   Attempt.status != "running")
            .execution_options(yield_per=5000))
    for r in session.execute(stmt):
        usage = AttemptUsage(r.model, r.cached_tokens, r.cache_write_tokens, r.reasoning_tokens,
                             float(r.cache_savings_usd), float(r.routing_savings_usd))
        yield RecordedAttempt(r.tenant_id, r.feature, r.key_id, r.deployment, as_utc(r.finished_at), r.status,
                              r.ended_job, r.tokens_in, r.tokens_out, float(r.cost_usd), usage)


def reconcile(session: Session, start: datetime, end: datetime, zone: tzinfo,
              tolerance_usd: float = 1e-6) -> list[Difference]:
    """Compare the rollup rows of the whole days from ``start`` to ``end`` (in ``zone``) with what the
    attempts of those days add up to; every row or measure that differs is returned."""
    start, end = day_of(start, zone), _next_midnight(end, zone)
    expected: dict[RowKey, dict[str, float]] = defaultdict(lambda: dict.fromkeys(MEASURES, 0.0))
    for attempt in recorded_attempts(session, start, end):
        figures = measures_of(attempt)
        for key in row_keys(attempt, zone):
            for name, value in figures.items():
                expected[key][name] += value
    stored = {key: figures for key, figures in _stored_rows(session, start, end)}
    return list(_differences(expected, stored, tolerance_usd))


def _next_midnight(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` when it is a midnight in ``zone``, else the next one (a day is 23 to 25 hours long)."""
    floor = day_of(moment, zone)
    return floor if floor == moment else day_of(floor + timedelta(hours=26), zone)


def _stored_rows(session: Session, start: datetime, end: datetime) -> Iterator[tuple[RowKey, dict[str, float]]]:
    stmt = select(*(_ROLLUPS.c[k] for k in KEY), *(_ROLLUPS.c[m] for m in MEASURES)).where(
        _ROLLUPS.c.bucket_start >= start, _ROLLUPS.c.bucket_start < end)
    for row in session.execute(stmt):
        values = tuple(row)
        key = cast(RowKey, (values[0], as_utc(values[1]), *values[2:len(KEY)]))
        yield key, {name: float(v) for name, v in zip(MEASURES, values[len(KEY):], strict=True)}


def _differences(expected: dict[RowKey, dict[str, float]], stored: dict[RowKey, dict[str, float]],
                 tolerance_usd: float) -> Iterator[Difference]:
    zero = dict.fromkeys(MEASURES, 0.0)
    for key in sorted(set(expected) | set(stored)):
        want, have = expected.get(key, zero), stored.get(key, zero)
        for name in MEASURES:
            slack = tolerance_usd if name in MONEY else 0.0
            if abs(want[name] - have[name]) > slack:
                yield Difference(key, name, want[name], have[name])


def differences_as_rows(found: Sequence[Difference]) -> list[dict[str, Any]]:
    """For printing: one dict per difference, the row's key spelled out."""
    return [{**dict(zip(KEY, d.key, strict=True)), "measure": d.measure, "expected": d.expected, "stored": d.stored}
            for d in found]
