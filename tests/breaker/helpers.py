"""Small verbs the breaker tests share."""

from __future__ import annotations

from shared.breaker import Breakers, Recorded
from tests.breaker.conftest import DEP


def outcomes(b: Breakers, n: int, at: float, *, ok: bool = False, kind: str | None = "server",
             latency_s: float = 0.5, dep: str = DEP) -> Recorded:
    """Record ``n`` identical outcomes at time ``at``; returns the last answer."""
    last = Recorded(state="?")
    for _ in range(n):
        last = b.record(dep, ok=ok, kind=kind, latency_s=latency_s, now=at)
    return last


def trip(b: Breakers, at: float, dep: str = DEP) -> None:
    """Open the breaker with rate-limit failures in a row (works whatever min_calls is)."""
    cfg = b.config(dep)
    last = outcomes(b, cfg.consecutive_429, at, kind="rate_limit", dep=dep)
    assert last.state == "open"
