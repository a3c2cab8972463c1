"""Alembic, driven from Python: ``gateway migrate`` works from any directory and from an installed
package because the migration scripts are found next to this module, not through an alembic.ini.

Developers add a revision with ``python -m shared.db.migrate revision "what changed"``.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool

from shared.config import get_settings
from shared.db.models import Base
from shared.db.session import make_engine, normalize_url

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Alembic keeps its running context in module globals: one command at a time per process.
# Across processes the migration transaction itself is the lock (see migrations/env.py).
_alembic_lock = threading.Lock()


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config pointing at our scripts and at ``url`` (default: the configured database)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = normalize_url(url or get_settings().database_url)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "no migration scripts found"
    return head


def current_revision(url: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    engine = make_engine(alembic_config(url).attributes["url"], poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


def upgrade(url: str | None = None, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; idempotent and safe when several processes start at once."""
    with _alembic_lock:
        command.upgrade(alembic_config(url), revision)
    return current_revision(url)


def downgrade(url: str | None = None, revision: str = "base") -> str | None:
    with _alembic_lock:
        command.downgrade(alembic_config(url), revision)
    return current_revision(url)


def schema_drift(url: str | None = None) -> list[Any]:
    """Differences between the models and the live schema (empty when the migrations are complete)."""
    engine = make_engine(alembic_config(url).attributes["url"], poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def make_revision(message: str, url: str | None = None) -> None:
    """Autogenerate a new revision script from the difference between the models and ``url``."""
    with _alembic_lock:
        command.revision(alembic_config(url), message=message, autogenerate=True)


if __name__ == "__main__":  # pragma: no cover - developer tool
    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit('usage: python -m shared.db.migrate revision "message"')
    make_revision(sys.argv[2])
