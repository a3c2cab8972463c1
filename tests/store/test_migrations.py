from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.orm import Session

from shared.db import jobs, migrate, tenants
from shared.db.ids import new_job_id
from shared.db.models import utcnow
from shared.db.session import make_engine, session_scope
from tests.store.conftest import chat, soon

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
    """0003 rebuilds ``jobs`` on SQLite; with foreign keys on, dropping the old copy would delete every
    job's attempts (ON DELETE CASCADE)."""
    migrate.downgrade(db_url, "0002_key_lanes")
    engine = make_engine(db_url)
    try:
        with session_scope(engine) as s:
            tenants.create_tenant(s, "acme")
            job_id = _job_of_0002(s)
            jobs.start_attempt(s, job_id, 1, "gpt-4o-mini@sim")
        assert migrate.upgrade(db_url) == migrate.head_revision()
        with session_scope(engine, readonly=True) as s:
            assert [a.number for a in jobs.list_attempts(s, job_id)] == [1]
            assert jobs.get_job(s, "acme", job_id).request == chat()
    finally:
        engine.dispose()


def _job_of_0002(session: Session) -> str:
    """A job row as revision 0002 holds it (the models of today have columns it lacks)."""
    job_id, now = new_job_id(), utcnow()
    session.execute(text(
        "INSERT INTO jobs (id, tenant_id, feature, lane, model, status, request, deadline, tokens_in, tokens_out, "
        "cost_usd, cache_status, attempts, created_at, updated_at) VALUES (:id, 'acme', 'default', 'standard', "
        "'fast', 'queued', :request, :deadline, 0, 0, 0, 'miss', 0, :now, :now)"),
        {"id": job_id, "request": json.dumps(chat()), "deadline": soon(), "now": now})
    return job_id


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
