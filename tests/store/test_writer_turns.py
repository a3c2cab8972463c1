"""SQLite writers in several processes and threads take turns instead of failing as "locked"."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import func, select

from shared.db import migrate, tenants
from shared.db.models import Tenant
from shared.db.session import make_engine, session_scope

ROOT = Path(__file__).resolve().parents[2]
WRITES = 60

WRITER = """
import sys
from shared.db import tenants
from shared.db.session import make_engine, session_scope
engine = make_engine(sys.argv[1])
for i in range(int(sys.argv[2])):
    with session_scope(engine) as s:
        tenants.create_tenant(s, f"{sys.argv[3]}-{i}")
"""


def test_writers_of_two_processes_and_many_threads_all_commit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/g.db"
    migrate.upgrade(url)
    other = subprocess.Popen([sys.executable, "-c", WRITER, url, str(WRITES), "proc"], cwd=ROOT)
    engine = make_engine(url)

    def write(thread: int) -> None:
        for i in range(WRITES // 4):
            with session_scope(engine) as s:
                tenants.create_tenant(s, f"thread{thread}-{i}")

    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(write, range(4)))
        assert other.wait(60) == 0
        with session_scope(engine, readonly=True) as s:
            assert s.scalar(select(func.count()).select_from(Tenant)) == 2 * WRITES
    finally:
        other.kill()
        engine.dispose()
    assert (tmp_path / "g.db-writer.lock").exists()
