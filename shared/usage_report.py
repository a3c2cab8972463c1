"""The usage report: what ``GET /v1/usage`` and ``gateway usage`` answer, read from the rollups.

Both take the same question (a window, a granularity, the fields to group by, whose usage) and give the
same answer: one row per bucket and group with requests, tokens by kind, cost, the cost of failed
attempts, and what caching and routing saved; and the window's totals. Every parameter is checked here,
so a bad one is a 400 that names it on the api and an error message in the CLI.

Buckets are whole hours (UTC) or whole days in ``billing.timezone``; a window's edges are rounded out to
whole buckets (``from`` down to its bucket's start; ``to`` includes the bucket it falls in).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, cast

from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db import usage
from shared.db.usage import GROUPS, MEASURES, MONEY, Granularity, UsageQuery
from shared.errors import InvalidRequest, echo

MAX_ROWS = 100_000
DEFAULT_WINDOW = {"hour": timedelta(hours=24), "day": timedelta(days=7)}
_SINCE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)


def parse_time(value: str, zone: tzinfo, param: str) -> datetime:
    """An ISO 8601 time, or a date (its midnight); without an offset, in ``billing.timezone``."""
    try:
        moment = datetime.fromisoformat(value)
        moment = (moment.replace(tzinfo=zone) if moment.tzinfo is None else moment).astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(f"{param} must be an ISO 8601 time like 2026-12-01T09:00:00Z or a date like "
                             f"2026-12-01, not {echo(value)}", param=param) from None
    if not EARLIEST <= moment < LATEST:
        raise InvalidRequest(f"{param} must be between {EARLIEST.year} and {LATEST.year}, not {echo(value)}",
                             param=param)
    return moment


def parse_since(value: str, now: datetime) -> datetime:
    """``24h``, ``30m``, ``7d``, ``2w``: that long before ``now`` (the CLI's ``--since``)."""
    found = _SINCE.fullmatch(value.strip())
    if not found:
        raise InvalidRequest(f"--since takes a number and a unit (m, h, d or w) like 24h or 7d, not {echo(value)}",
                             param="since")
    return now - timedelta(**{_UNITS[found[2]]: int(found[1])})


def parse_groups(value: str | Sequence[str] | None) -> tuple[str, ...]:
    names = value.split(",") if isinstance(value, str) else list(value or ())
    groups = tuple(name.strip().lower() for name in names if name.strip())
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        raise InvalidRequest(f"group_by: unknown field {echo(unknown[0])}; group by any of "
                             f"{', '.join(GROUPS)} (comma-separated)", param="group_by")
    if len(set(groups)) != len(groups):
        raise InvalidRequest(f"group_by names a field twice: {echo(','.join(groups))}", param="group_by")
    return groups


def parse_granularity(value: str | None) -> Granularity:
    if value is None:
        return "day"
    if value not in ("hour", "day"):
        raise InvalidRequest(f"granularity is hour or day, not {echo(value)}", param="granularity")
    return cast(Granularity, value)


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime


def window(settings: Settings, granularity: Granularity, start: datetime | None, end: datetime | None,
           now: datetime) -> Window:
    """The window rounded out to whole buckets, checked: ``from`` before ``to``, and not before what the
    rollups keep (``retention.usage_days``)."""
    zone = settings.billing.zone
    end = end or now
    start = start or end - DEFAULT_WINDOW[granularity]
    if start >= end:
        raise InvalidRequest(f"from ({start.isoformat()}) must be before to ({end.isoformat()})", param="from")
    days = settings.retention.usage_days
    if days is not None and start < now - timedelta(days=days):
        oldest = now - timedelta(days=days)
        raise InvalidRequest(f"from ({start.isoformat()}) is further back than the usage rollups are kept "
                             f"({days:g} days, retention.usage_days): use a time after {oldest.isoformat()}",
                             param="from")
    floor = usage.bucket_floor(start, granularity, zone)
    last = usage.bucket_floor(end, granularity, zone)
    return Window(floor, end if last == end else _bucket_end(last, granularity, zone))


def _bucket_end(start: datetime, granularity: Granularity, zone: tzinfo) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    return usage.day_of(start + timedelta(hours=26), zone)  # the next midnight: days are 23-25 hours long


def build(session: Session, settings: Settings, query: UsageQuery) -> dict[str, Any]:
    """The report as JSON: rows (bucket start and end in ``billing.timezone``, the groups, the measures)
    and the window's totals."""
    rows = usage.report(session, query, MAX_ROWS)
    if len(rows) > MAX_ROWS:
        raise InvalidRequest(f"the report would have more than {MAX_ROWS} rows: narrow the window, use day "
                             "granularity, or group by fewer fields", param="group_by")
    zone, width = settings.billing.zone, len(query.group_by)
    spans: dict[datetime, tuple[str, str]] = {}  # a month has 30 day buckets: format each once
    totals = [0.0] * len(MEASURES)
    data = []
    for row in rows:
        start = row[0]
        span = spans.get(start)
        if span is None:
            aware = usage.as_utc(start)
            span = spans[start] = (aware.astimezone(zone).isoformat(),
                                   _bucket_end(aware, query.granularity, zone).astimezone(zone).isoformat())
        figures = row[1 + width:]
        for n, value in enumerate(figures):
            totals[n] += value
        # Sums come exact from the store (numeric, cast once): a float's shortest form shows them as stored.
        data.append({"start": span[0], "end": span[1], **dict(zip(query.group_by, row[1:1 + width], strict=True)),
                     **dict(zip(MEASURES, figures, strict=True))})
    return {"object": "usage", "from": query.start.astimezone(zone).isoformat(),
            "to": query.end.astimezone(zone).isoformat(), "granularity": query.granularity,
            "timezone": settings.billing.timezone, "group_by": list(query.group_by),
            "tenant": query.tenant, "data": data, "totals": _measures(totals)}


_IS_MONEY = tuple(name in MONEY for name in MEASURES)


def _measures(figures: Sequence[Any]) -> dict[str, Any]:
    return {name: round(float(v or 0), 8) if money else int(v or 0)
            for name, money, v in zip(MEASURES, _IS_MONEY, figures, strict=True)}


def to_csv(report: dict[str, Any], *, timed: bool = True) -> str:
    """The report's rows as CSV, for finance: one line per bucket (``timed``) and group, a header line first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*(["start", "end"] if timed else []), *report["group_by"], *MEASURES]
    writer.writerow(columns)
    for row in report["data"]:
        writer.writerow([cell(row.get(c)) for c in columns])
    return out.getvalue()


def cell(value: Any) -> Any:
    """A spreadsheet must not run a formula a tenant slipped into a feature name (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


def totals_by_group(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's rows summed over its buckets: one row per group for the whole window (``gateway usage``'s
    default), biggest cost first."""
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in report["data"]:
        key = tuple(row.get(g) for g in report["group_by"])
        into = merged.setdefault(key, {**dict(zip(report["group_by"], key, strict=True)),
                                       **dict.fromkeys(MEASURES, 0)})
        for name in MEASURES:
            into[name] += row[name]
    return sorted((dict(r, **_measures([r[name] for name in MEASURES])) for r in merged.values()),
                  key=lambda r: -r["cost_usd"])
