"""SQLite's WAL reaches the database file through the process's checkpoint thread, not a caller's commit,
and that thread ends when nothing is written and starts again with the next write."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from shared.db import checkpoints
from shared.db import session as db_session


def _in_database_file(path: Path, marker: str) -> bool:
    """Whether ``marker`` is in the main database file itself (``immutable=1`` reads no WAL)."""
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM notes WHERE body = ?", (marker,)).fetchone()[0] > 0
    except sqlite3.OperationalError:  # the table itself not copied yet
        return False
    finally:
        conn.close()


def _checkpointed_here(path: Path) -> bool:
    """Whether this process runs a checkpointer for ``path``."""
    return (os.getpid(), path.resolve()) in checkpoints._running  # a lookup: other tests' threads change the dict


def _until(condition, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_writes_are_checkpointed_by_a_thread_that_ends_idle_and_restarts(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoints, "EVERY_S", 0.05)
    monkeypatch.setattr(checkpoints, "IDLE_ROUNDS", 3)
    path = tmp_path / "g.db"
    engine = db_session.make_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == checkpoints.BACKSTOP_PAGES
        with db_session.session_scope(engine) as s:
            s.execute(text("CREATE TABLE notes (body TEXT)"))
            s.execute(text("INSERT INTO notes VALUES ('first')"))
        assert _until(lambda: _in_database_file(path, "first"))
        assert _until(lambda: not _checkpointed_here(path))  # nothing more written: the thread ended
        with db_session.session_scope(engine) as s:
            s.execute(text("INSERT INTO notes VALUES ('second')"))
        assert _checkpointed_here(path)  # the write started it again
        assert _until(lambda: _in_database_file(path, "second"))
    finally:
        engine.dispose()


def test_a_checkpointer_ends_when_its_database_is_removed(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpoints, "EVERY_S", 0.05)
    path = tmp_path / "gone.db"
    engine = db_session.make_engine(f"sqlite:///{path}")
    with db_session.session_scope(engine) as s:
        s.execute(text("CREATE TABLE notes (body TEXT)"))
    engine.dispose()
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    assert _until(lambda: not _checkpointed_here(path))
