"""The leading scheduler runs retention from its sweep: rarely, sooner while a backlog lasts, and a
failed purge never stops admission."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from scheduler import main
from shared.config import get_settings
from shared.db import audit, retention


def bare_scheduler() -> main.Scheduler:
    """Just what ``_purge`` reads: no Redis, no lease."""
    scheduler = main.Scheduler.__new__(main.Scheduler)
    scheduler.settings = get_settings()
    scheduler._next_purge = 0.0
    scheduler.engine = None  # type: ignore[assignment]
    return scheduler


def test_a_purge_a_minute_and_one_a_sweep_while_a_backlog_lasts(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([retention.Purged(blanked=1000, more=True), retention.Purged(blanked=3), retention.Purged()])
    clock = [0.0]
    ran: list[float] = []

    def purge(config: object, engine: object = None) -> retention.Purged:
        ran.append(clock[0])
        return next(answers)

    monkeypatch.setattr(retention, "purge", purge)
    monkeypatch.setattr(audit, "purge_content", lambda engine=None: 0)
    scheduler = bare_scheduler()
    for now in (100.0, 101.0, 100.0 + main.SWEEP_EVERY_S, 150.0, 102.0 + main.PURGE_EVERY_S):
        clock[0] = now
        scheduler._purge(now)
    assert ran == [100.0, 100.0 + main.SWEEP_EVERY_S, 102.0 + main.PURGE_EVERY_S]


def test_a_failed_purge_is_logged_and_tried_again_a_minute_later(monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    def locked(config: object, engine: object = None) -> retention.Purged:
        raise OperationalError("UPDATE jobs", {}, Exception("database is locked"))

    monkeypatch.setattr(retention, "purge", locked)
    scheduler = bare_scheduler()
    scheduler._purge(100.0)  # no exception escapes into the admission loop
    assert scheduler._next_purge == 100.0 + main.PURGE_EVERY_S
    assert "retention purge failed" in caplog.text


def test_the_purge_drops_audit_content_too_and_comes_back_soon_while_a_backlog_lasts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(retention, "purge", lambda config, engine=None: retention.Purged())
    monkeypatch.setattr(audit, "purge_content", lambda engine=None: calls.append(engine) or audit.BATCH_ROWS)
    scheduler = bare_scheduler()
    scheduler._purge(100.0)
    assert len(calls) == 1 and scheduler._next_purge == 100.0 + main.SWEEP_EVERY_S
