"""SQLite's WAL is copied back into the database by a background thread of each process, never by a commit.

Why: SQLite's own auto-checkpoint runs inside the commit that takes the WAL past 1,000 pages, with the
checkpoint's fsyncs on that caller's time. At 100 fast-lane calls a second that is about one call in a
hundred: the fast lane's added p99 was 8.5-10.2 ms with it and 4.5-4.6 ms without it, p50 unchanged
(``ops/bench_gateway.py --rate 100``). So in each process one daemon thread per database file runs a
PASSIVE checkpoint every ``EVERY_S``: it copies what the WAL holds without waiting for, or blocking,
readers and writers (one checkpoint runs at a time; others find it busy or nothing to copy, and one
with nothing to copy costs no fsync). Connections keep SQLite's auto-checkpoint only as a backstop,
at ``BACKSTOP_PAGES``: should no thread run (one ends after a minute with nothing written, and the next
write starts it again), the WAL still stays bounded.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

log = logging.getLogger("gateway.db")

EVERY_S = 1.0  # about as often as 1,000 pages fill at 100 calls a second
IDLE_ROUNDS = 60  # a thread that found nothing new to copy this many times in a row ends (restarted on a write)
# A connection still checkpoints itself past this many pages: the WAL stays bounded should no thread run.
BACKSTOP_PAGES = 10_000

_running: dict[tuple[int, Path], threading.Thread] = {}  # (process, database) -> its checkpointer
_lock = threading.Lock()


def ensure_checkpointer(database: Path) -> None:
    """Start this process's checkpointer for ``database`` unless it runs (a forked child starts its own).
    Called on every connection made and every writing transaction: a dictionary lookup when it runs."""
    key = (os.getpid(), database)
    if key in _running:
        return
    with _lock:
        if key not in _running:
            thread = threading.Thread(target=_checkpoint_while_written, args=(key,), daemon=True,
                                      name=f"sqlite-checkpoint-{database.name}")
            _running[key] = thread
            thread.start()


def checkpoint(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """One PASSIVE checkpoint: (busy, frames in the WAL, frames copied), as SQLite reports them."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return busy, frames, copied


def _checkpoint_while_written(key: tuple[int, Path]) -> None:
    """Checkpoint every ``EVERY_S`` until the file is gone or nothing was written for ``IDLE_ROUNDS``."""
    database = key[1]
    conn: sqlite3.Connection | None = None
    last, idle = None, 0
    try:
        while idle < IDLE_ROUNDS:
            time.sleep(EVERY_S)
            if not database.exists():
                return
            try:
                conn = conn or sqlite3.connect(database, isolation_level=None, check_same_thread=False)
                _busy, frames, copied = checkpoint(conn)
            except sqlite3.Error as exc:  # a disk error: try again on a new connection
                log.warning("SQLite checkpoint of %s failed: %s", database, exc)
                if conn is not None:
                    conn.close()
                conn = None
                continue
            idle = idle + 1 if (frames, copied) == last and frames == copied else 0
            last = (frames, copied)
    finally:
        with _lock:
            _running.pop(key, None)
        if conn is not None:
            conn.close()
