from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, StatementError

from shared.config import get_settings
from shared.db import session as db_session
from shared.db import tenants
from shared.db.models import Tenant
from tests.store.conftest import Scope, new_job


def test_postgres_urls_use_psycopg3() -> None:
    assert db_session.normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert db_session.normalize_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert db_session.normalize_url("sqlite:///x.db") == "sqlite:///x.db"


def test_sqlite_is_tuned_for_concurrent_use(tmp_path) -> None:
    engine = db_session.make_engine(f"sqlite:///{tmp_path}/new/dir/g.db")
    with engine.connect() as conn:
        pragmas = {p: conn.exec_driver_sql(f"PRAGMA {p}").scalar() for p in
                   ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
    engine.dispose()
    assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000, "foreign_keys": 1}
    assert (tmp_path / "new" / "dir" / "g.db").exists()


def test_get_engine_is_one_per_configured_url(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{tmp_path}/cfg.db")
    get_settings.cache_clear()
    try:
        assert db_session.get_engine() is db_session.get_engine()
        assert str(db_session.get_engine().url).endswith("cfg.db")
    finally:
        get_settings.cache_clear()


def test_scope_rolls_back_on_error(scope: Scope) -> None:
    with pytest.raises(RuntimeError), scope() as s:
        tenants.create_tenant(s, "acme")
        raise RuntimeError("boom")
    with scope(readonly=True) as s:
        assert tenants.list_tenants(s) == []


def test_readonly_scope_refuses_writes_on_postgres(pg_url: str) -> None:
    engine = db_session.make_engine(pg_url, pool_size=1, max_overflow=0)
    try:
        with pytest.raises(DBAPIError, match="read-only"), db_session.session_scope(engine, readonly=True) as s:
            s.execute(text("INSERT INTO tenants (id, name, disabled, created_at) VALUES ('x', 'x', false, now())"))
        with db_session.session_scope(engine) as s:  # the one pooled connection is writable again
            s.add(Tenant(id="readonly-check", name="x"))
        with db_session.session_scope(engine) as s:
            s.delete(s.get(Tenant, "readonly-check"))
    finally:
        engine.dispose()


def test_naive_datetimes_are_refused(scope: Scope, two_tenants: tuple[str, str]) -> None:
    with pytest.raises(StatementError, match="naive datetime"), scope() as s:
        new_job(s, deadline=datetime(2030, 1, 1))
