"""Engines and short transactions for SQLite (embedded default) and PostgreSQL (production).

SQLite needs care to behave like a server database under threads: WAL so readers never block the
writer, a busy timeout so writers queue instead of failing, foreign keys switched on, and
SQLAlchemy (not the sqlite3 module) emitting BEGIN so SAVEPOINTs work. A writing transaction
starts with BEGIN IMMEDIATE: a deferred one that reads before it writes fails at once with
"database is locked" when another writer committed in between, which no busy timeout can fix.
Before that, ``session_scope`` writers take turns on a lock file, so BEGIN IMMEDIATE never waits.
The WAL is checkpointed by a thread, not by the commit that fills it (``shared.db.checkpoints``).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings
from shared.db import checkpoints
from shared.private_files import create_private_file, make_private_dirs, restrict_file

_SQLITE_BEGIN = "gateway_sqlite_begin"
UNREADABLE = "$unreadable"


def normalize_url(url: str) -> str:
    """Map plain ``postgresql://`` (and ``postgres://``) URLs to the psycopg 3 driver."""
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            return "postgresql+psycopg://" + url[len(plain):]
    return url


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal", "-writer.lock")


def _on_disk(database: str | None) -> Path | None:
    """The database file of an SQLite URL's database part; None for memory and ``file:`` URIs."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _prepare_sqlite_file(url: str) -> None:
    """Create the store's directory (700) and database file (600) before SQLite would.

    The file holds every tenant's prompts; SQLite would create it 644, and its -wal and -shm files
    take the database file's mode. Whichever process opens the store first (api, worker, scheduler,
    ``gateway migrate``) makes it private, and files an older version left readable are tightened.
    """
    database = make_url(url).database
    real = _on_disk(database)  # where SQLite and the writer lock put their side files
    if database and real is not None:
        path = Path(database).expanduser()
        make_private_dirs(path.parent)
        create_private_file(path)
        for suffix in SQLITE_SIDE_FILES:
            restrict_file(Path(f"{real}{suffix}"))


def _tune_sqlite(engine: Engine) -> None:
    database = _on_disk(engine.url.database)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_connection.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000", "foreign_keys=ON",
                       f"wal_autocheckpoint={checkpoints.BACKSTOP_PAGES}"):  # a thread checkpoints (see there)
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()
        if database is not None:
            checkpoints.ensure_checkpointer(database)

    @event.listens_for(engine, "engine_disposed")
    def _on_dispose(disposed: Engine) -> None:  # its writers' kept connection goes with its pool
        turn = _writer_turns.get(disposed.url.database or "")
        if turn is not None:
            turn.forget(disposed)

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        begin = conn.get_execution_options().get(_SQLITE_BEGIN, "BEGIN IMMEDIATE")
        if begin == "BEGIN":
            conn.exec_driver_sql(begin)
        elif getattr(_turn_taken, "held", False):
            # No other writer of ours can hold the lock (they take the same turn first); one from outside
            # (a migration) is waited for by SQLite's busy handler. Saves two PRAGMAs per transaction.
            conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")
        else:
            _begin_immediate(conn.connection.dbapi_connection)


def _begin_immediate(dbapi_connection: Any, wait_s: float = 10.0) -> None:
    """Take SQLite's write lock, polling every 0.2 ms while another process holds it.

    For writers outside ``session_scope`` (migrations, scripts): those inside took their turn (below),
    so their BEGIN IMMEDIATE succeeds at once and is sent plainly. SQLite's own busy handler sleeps
    1, 2, 5 ... up to 100 ms between tries and would make them wait tens of ms for a short lock.
    """
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=0")
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                cursor.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.0002)
    finally:
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


def _lenient_json(text: str) -> Any:
    """SQLite stores JSON as text that nothing validates: a corrupted value reads as a marker instead of
    an exception, so one bad row can never break a listing or a process (recovery fails its job)."""
    try:
        return json.loads(text)
    except ValueError:
        return {UNREADABLE: f"the stored JSON could not be read ({len(text)} characters)"}


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url`` (SQLite file or PostgreSQL), tuned for short concurrent transactions."""
    url = normalize_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        _prepare_sqlite_file(url)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
        kwargs.setdefault("json_deserializer", _lenient_json)
        engine = create_engine(url, **kwargs)
        _tune_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, **kwargs)


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str | None = None) -> Engine:
    """The process-wide engine for ``url`` (default: the configured ``database_url``), made once."""
    url = url or get_settings().database_url
    with _engines_lock:
        if url not in _engines:
            _engines[url] = make_engine(url)
        return _engines[url]


def _forget_pools_after_fork() -> None:
    """A forked child (prefork worker, uvicorn --workers) must not reuse its parent's connections."""
    for engine in _engines.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_pools_after_fork)


@lru_cache(maxsize=8)
def _sessionmakers(engine: Engine) -> tuple[sessionmaker[Session], sessionmaker[Session]]:
    if engine.dialect.name == "postgresql":
        reader = engine.execution_options(postgresql_readonly=True)
    else:
        reader = engine.execution_options(**{_SQLITE_BEGIN: "BEGIN"})
    return (
        sessionmaker(bind=engine, expire_on_commit=False),
        sessionmaker(bind=reader, expire_on_commit=False),
    )


def get_sessionmaker(engine: Engine | None = None, *, readonly: bool = False) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (callers turn them into JSON after)."""
    writer, reader = _sessionmakers(engine or get_engine())
    return reader if readonly else writer


@contextmanager
def session_scope(engine: Engine | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """One short transaction: commit on success, roll back on any exception.

    ``readonly=True`` is for pure reads (lookups, listings): on SQLite it does not take the write
    lock, on PostgreSQL the transaction is READ ONLY.
    """
    maker = get_sessionmaker(engine, readonly=readonly)
    turn = nullcontext() if readonly else _writer_turn(maker.kw["bind"])
    with turn:
        # On an SQLite file, the writer whose turn it is writes on the turn's kept connection: a
        # connection from the pool cost a third of a short transaction's CPU (see ``_WriterTurn``).
        kept = turn.connection(maker.kw["bind"]) if isinstance(turn, _WriterTurn) else None
        session = maker() if kept is None else maker(bind=kept)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


_turn_taken = threading.local()  # .held: this thread holds its store's writer turn (``_WriterTurn``)


class _WriterTurn:
    """SQLite has one writer at a time: its writers take turns here instead of in its busy handler.

    Threads of one process queue on a lock, processes on flock(2) of a file next to the database.
    Both wait in the kernel, so a waiting writer burns no CPU and starts as soon as the previous one
    is done; SQLite's busy handler sleeps 1, 2, 5 ... 100 ms and turns contention into convoys.

    Since one thread of a process writes at a time, the turn also keeps the connection it writes on
    (``connection``; database files only: each connection to ``:memory:`` is a database of its own).
    Checking a connection out of the pool and back in took ~70 us of CPU, a third of a one-row
    transaction (``ops/bench_prepared.py``, insert_tx and record_tx).
    """

    def __init__(self, database: Path | None) -> None:
        self.database = database
        self.lock_path = None if database is None else f"{database}-writer.lock"
        self._reset()

    def _reset(self) -> None:
        """Also after fork: a flock belongs to the open file, which parent and child would share; so
        does the kept connection, which the child forgets without closing (SQLite must not carry a
        connection across a fork)."""
        self.threads = threading.Lock()
        self.fd: int | None = None
        self.kept: Connection | None = None
        self.pid = os.getpid()  # whose ``kept`` it is: a forked child's dispose must not close it

    def connection(self, engine: Engine) -> Connection | None:
        """The connection the writer holding this turn writes on, for ``engine``: kept between turns,
        opened again after an engine's dispose, an invalidation, or a transaction left open."""
        if self.database is None:
            return None
        kept = self.kept
        if kept is not None and (kept.engine is not engine or kept.closed or kept.invalidated
                                 or kept.in_transaction()):
            self.forget()
            kept = None
        if kept is None:
            kept = self.kept = engine.connect()
        return kept

    def forget(self, engine: Engine | None = None) -> None:
        """Close and drop the kept connection (only ``engine``'s, when given); a forked child only drops it."""
        kept = self.kept
        if kept is None or (engine is not None and kept.engine is not engine):
            return
        self.kept = None
        if self.pid == os.getpid():
            with suppress(Exception):  # a broken connection goes anyway
                kept.detach()  # closed, not given back to a pool (a disposed one would keep it open)
                kept.close()

    def __enter__(self) -> None:
        self.threads.acquire()
        try:
            if self.lock_path is not None:
                if self.fd is None:
                    self.fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.threads.release()
            raise
        _turn_taken.held = True
        if self.database is not None:  # a checkpointer that ended idle starts again with the writes
            checkpoints.ensure_checkpointer(self.database)

    def __exit__(self, *exc: object) -> None:
        _turn_taken.held = False
        try:
            if self.fd is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self.threads.release()


_writer_turns: dict[str, _WriterTurn] = {}


def _writer_turn(bind: Any) -> AbstractContextManager[Any]:
    """The turn to take before writing to ``bind``'s database; nothing to take on PostgreSQL."""
    if bind.dialect.name != "sqlite":
        return nullcontext()
    database = bind.url.database or ""
    turn = _writer_turns.get(database)
    if turn is None:
        with _engines_lock:
            turn = _writer_turns.setdefault(database, _WriterTurn(_on_disk(database)))
    return turn


def _reset_writer_turns_after_fork() -> None:
    for turn in _writer_turns.values():
        turn._reset()


os.register_at_fork(after_in_child=_reset_writer_turns_after_fork)
