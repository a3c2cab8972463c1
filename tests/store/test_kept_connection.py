"""SQLite writers of one process write on one kept connection (``shared.db.session._WriterTurn``).

What a caller relies on: each ``session_scope`` is still its own transaction (a failed one leaves
nothing behind, not even an open transaction for the next writer), an engine's dispose lets go of
the file, and a forked child never writes on its parent's connection.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from shared.db import migrate, tenants
from shared.db import session as db_session
from shared.db.session import make_engine, session_scope


def _writers_connection(engine: Any) -> Any:
    with session_scope(engine) as s:
        return s.connection().connection.dbapi_connection


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/g.db"
    migrate.upgrade(url)
    return url


def test_writers_take_turns_on_one_connection_and_each_scope_is_its_own_transaction(url: str) -> None:
    engine = make_engine(url)
    try:
        first = _writers_connection(engine)
        with pytest.raises(RuntimeError), session_scope(engine) as s:
            tenants.create_tenant(s, "rolled-back")
            raise RuntimeError("boom")
        with session_scope(engine) as s:
            tenants.create_tenant(s, "kept")
        assert _writers_connection(engine) is first
        assert not first.in_transaction  # nothing left open between turns
        with session_scope(engine, readonly=True) as s:
            assert [t.id for t in tenants.list_tenants(s)] == ["kept"]
    finally:
        engine.dispose()


def test_a_transaction_left_open_is_not_inherited_by_the_next_writer(url: str) -> None:
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:
            s.connection().exec_driver_sql("SELECT 1")
        turn: Any = db_session._writer_turn(engine)
        assert turn.kept is not None
        turn.kept.begin()  # as if a rollback had failed half-way
        turn.kept.exec_driver_sql("INSERT INTO tenants (id, name, disabled, created_at) "
                                  "VALUES ('orphan', 'x', 0, '2026-01-01')")
        with session_scope(engine) as s:
            tenants.create_tenant(s, "next")
        with session_scope(engine, readonly=True) as s:
            assert [t.id for t in tenants.list_tenants(s)] == ["next"]
    finally:
        engine.dispose()


def test_dispose_closes_the_kept_connection_and_the_next_write_opens_another(url: str) -> None:
    engine = make_engine(url)
    first = _writers_connection(engine)
    engine.dispose()
    with pytest.raises(Exception, match="closed"):
        first.execute("SELECT 1")
    try:
        assert _writers_connection(engine) is not first
        with session_scope(engine) as s:
            tenants.create_tenant(s, "after-dispose")
    finally:
        engine.dispose()


def _child_writes(url: str, parents: int, out: Any) -> None:
    engine = make_engine(url)
    try:
        mine = _writers_connection(engine)
        with session_scope(engine) as s:
            tenants.create_tenant(s, "child")
        out.put(id(mine) != parents)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which asserts
        out.put(repr(exc))
    finally:
        engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_writes_on_a_connection_of_its_own(url: str) -> None:
    engine = db_session.get_engine(url)  # the process-wide engine, as a prefork worker inherits it
    parents = _writers_connection(engine)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_writes, args=(url, id(parents), out))
    child.start()
    assert out.get(timeout=60) is True
    child.join(60)
    assert child.exitcode == 0
    with session_scope(engine) as s:  # the parent's connection was not closed by the child
        tenants.create_tenant(s, "parent")
    assert _writers_connection(engine) is parents
    with session_scope(engine, readonly=True) as s:
        assert sorted(t.id for t in tenants.list_tenants(s)) == ["child", "parent"]
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"


def test_an_in_memory_database_keeps_no_connection() -> None:
    engine = make_engine("sqlite://")
    try:
        with session_scope(engine) as s:
            s.connection().exec_driver_sql("CREATE TABLE t (v INTEGER)")
            s.connection().exec_driver_sql("INSERT INTO t VALUES (1)")
        assert db_session._writer_turn(engine).kept is None  # type: ignore[attr-defined]
        with session_scope(engine) as s:  # the same database: the pool's connection of this thread
            assert s.connection().exec_driver_sql("SELECT count(*) FROM t").scalar() == 1
    finally:
        engine.dispose()
