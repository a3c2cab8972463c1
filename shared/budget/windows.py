"""Calendar windows of the dollar budgets: a day or a month in ``billing.timezone``.

A window is named by its date (``2026-12-01``) or month (``2026-12``) and spans from its first midnight
to the next one, in UTC, whatever the daylight-saving changes in between (a day is 23 to 25 hours).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Literal

WindowKind = Literal["day", "month"]
WINDOWS: tuple[WindowKind, ...] = ("day", "month")
PERIOD = {"day": "daily", "month": "monthly"}


@dataclass(frozen=True)
class Window:
    kind: WindowKind
    id: str
    start: datetime
    end: datetime

    @property
    def ends_at(self) -> float:
        """The end as epoch seconds (what Redis compares with its clock)."""
        return self.end.timestamp()


def _midnight(year: int, month: int, day: int, zone: tzinfo) -> datetime:
    return datetime(year, month, day, tzinfo=zone).astimezone(UTC)


def window_at(kind: WindowKind, moment: datetime, zone: tzinfo) -> Window:
    """The day or month ``moment`` falls in, in ``zone``."""
    local = moment.astimezone(zone)
    if kind == "day":
        nxt = (local.replace(hour=12) + timedelta(days=1)).date()
        return Window("day", local.date().isoformat(), _midnight(local.year, local.month, local.day, zone),
                      _midnight(nxt.year, nxt.month, nxt.day, zone))
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return Window("month", f"{local.year:04d}-{local.month:02d}", _midnight(local.year, local.month, 1, zone),
                  _midnight(year, month, 1, zone))
