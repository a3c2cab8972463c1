from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import inspect

from shared.db import jobs, migrate, tenants
from shared.db.session import make_engine, session_scope
from tests.store.conftest import chat, new_job

ROOT = Path(__file__).resolve().parents[2]


def _empty_pg_database(db_url: str) -> str:
    """Downgrade the session database to nothing, so the processes below race on a fresh schema."""
    migrate.downgrade(db_url)
    return db_url


def test_models_and_migrations_agree(db_url: str) -> None:
    assert migrate.current_revision(db_url) == migrate.head_revision()
    assert migrate.schema_drift(db_url) == []


def test_upgrade_is_idempotent(db_url: str) -> None:
    assert migrate.upgrade(db_url) == migrate.head_revision()
    assert migrate.upgrade(db_url) == migrate.head_revision()


def test_downgrade_then_upgrade_round_trips(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/round/trip.db"
    migrate.upgrade(url)
    assert migrate.downgrade(url) is None
    engine = make_engine(url)
    assert set(inspect(engine).get_table_names()) == {"alembic_version"}
    engine.dispose()
    assert migrate.upgrade(url) == migrate.head_revision()
    assert migrate.schema_drift(url) == []


def test_an_upgrade_that_copies_a_table_keeps_the_rows_that_reference_it(db_url: str) -> None:
    """0003 rebuilds ``jobs`` on SQLite (and 0007 ``api_keys``); with foreign keys on, dropping the old copy
    would delete every job's attempts (ON DELETE CASCADE). The rows are written at head (the models'
    columns), then taken down to 0002 and up again, through every later revision's table copies both ways."""
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            tenants.create_tenant(s, "acme")
            tenants.create_key(s, "acme", "k")
            job, _ = new_job(s)
            jobs.start_attempt(s, job.id, 1, "gpt-4o-mini@sim")
        migrate.downgrade(db_url, "0002_key_lanes")
        assert migrate.upgrade(db_url) == migrate.head_revision()
        with session_scope(engine, readonly=True) as s:
            assert [a.number for a in jobs.list_attempts(s, job.id)] == [1]
            assert jobs.get_job(s, "acme", job.id).request == chat()
            assert [k.public_id.startswith("key_") for k in tenants.list_keys(s, "acme")] == [True]
    finally:
        engine.dispose()


def _upgrade_in_processes(url: str, count: int) -> list[subprocess.CompletedProcess[str]]:
    code = f"from shared.db.migrate import upgrade; upgrade({url!r})"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        for _ in range(count)
    ]
    return [subprocess.CompletedProcess(p.args, p.wait(timeout=60), *p.communicate()) for p in procs]


def test_processes_starting_together_migrate_once(db_url: str, tmp_path) -> None:
    """api, scheduler and worker all upgrade at start; the losers must wait, then do nothing."""
    url = f"sqlite:///{tmp_path}/race.db" if db_url.startswith("sqlite") else _empty_pg_database(db_url)
    results = _upgrade_in_processes(url, 3)
    assert [r.returncode for r in results] == [0, 0, 0], [r.stderr[-2000:] for r in results]
    assert migrate.current_revision(url) == migrate.head_revision()
    assert migrate.schema_drift(url) == []


def test_threads_of_one_process_can_upgrade_together(tmp_path) -> None:
    url = f"sqlite:///{tmp_path}/threads.db"
    with ThreadPoolExecutor(4) as pool:
        revisions = list(pool.map(lambda _: migrate.upgrade(url), range(4)))
    assert revisions == [migrate.head_revision()] * 4
