"""Alembic environment: one transaction per upgrade, serialised across processes.

PostgreSQL takes a transaction-scoped advisory lock; on SQLite the engine opens the transaction
with BEGIN IMMEDIATE, which is the same thing. A second process that starts at the same moment
waits, then finds the schema already at head and does nothing.

On SQLite a migration runs with foreign keys off, as SQLite's own recipe for table changes says: a
batch operation copies the table and drops the old one, and with foreign keys on that DROP deletes
every row first and cascades, e.g. a job's attempts. ``foreign_key_check`` before the commit
proves the copy kept every reference.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, Engine, event, pool, text

from shared.db.models import Base, UTCDateTime
from shared.db.session import make_engine

MIGRATION_LOCK_KEY = 0x6761746577617900  # "gateway\0"


def _render_item(kind: str, obj: Any, _autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our own column types as plain SQLAlchemy ones so revisions never import the models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=Base.metadata, render_as_batch=True, compare_type=True,
        render_item=_render_item, **kwargs,
    )


def run_offline() -> None:
    _configure(url=context.config.attributes["url"], literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_foreign_keys_off(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _off(dbapi_connection: Any, _record: Any) -> None:  # after make_engine's own, which turns them on
        dbapi_connection.execute("PRAGMA foreign_keys=OFF")


def _check_foreign_keys(connection: Connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:10]}")


def run_online() -> None:
    engine = make_engine(context.config.attributes["url"], poolclass=pool.NullPool)
    sqlite = engine.dialect.name == "sqlite"
    if sqlite:
        _sqlite_foreign_keys_off(engine)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            _configure(connection=connection)
            context.run_migrations()
            if sqlite:
                _check_foreign_keys(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
