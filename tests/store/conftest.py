"""Every store test runs twice: on a SQLite file and on a fresh PostgreSQL database.

The PostgreSQL database is created once per test session (``gw_test_<random>``), migrated, emptied
between tests and dropped at the end.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from shared.db import jobs, migrate, tenants
from shared.db.models import Job
from shared.db.session import make_engine, session_scope

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"

Scope = Callable[..., AbstractContextManager[Session]]


def _pg_admin() -> Engine:
    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    name = f"gw_test_{secrets.token_hex(4)}"
    admin = _pg_admin()
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 (user postgres) is unreachable: {exc.orig}")
    url = f"{PG_SERVER}/{name}"
    migrate.upgrade(url)
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/var/gateway.db"
        migrate.upgrade(url)
        return url
    url: str = request.getfixturevalue("pg_url")
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE attempts, jobs, api_keys, tenants, audit_events, usage_rollups, admin_actions "
                          "RESTART IDENTITY CASCADE"))
    engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def scope(engine: Engine) -> Scope:
    """``with scope() as session:`` — one committed transaction against the test database."""
    return partial(session_scope, engine)


@pytest.fixture
def two_tenants(scope: Scope) -> tuple[str, str]:
    with scope() as s:
        tenants.create_tenant(s, "acme", "Acme Corp")
        tenants.create_tenant(s, "globex")
    return "acme", "globex"


def soon(seconds: float = 600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def chat(text_: str = "hi") -> dict[str, Any]:
    return {"model": "fast", "messages": [{"role": "user", "content": text_}]}


def new_job(session: Session, tenant: str = "acme", **overrides: Any) -> tuple[Job, bool]:
    fields: dict[str, Any] = dict(
        tenant_id=tenant, feature="default", lane="standard", task=None, model="fast",
        request=chat(), deadline=soon(), idempotency_key=None,
    )
    fields.update(overrides)
    return jobs.create_job(session, **fields)
