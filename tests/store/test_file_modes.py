"""The SQLite store and the local keys are private to the gateway's user, whoever creates them."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import main as cli
from shared.config import get_settings
from shared.db import migrate, tenants
from shared.db.session import get_engine, make_engine, session_scope


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """The common 022: what made the store world-readable before."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_fresh_store_is_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    db = tmp_path / "a" / "var" / "gateway.db"
    url = f"sqlite:///{db}"
    migrate.upgrade(url)
    engine = make_engine(url)
    try:
        with session_scope(engine) as s:  # a write: WAL, shared memory and the writer lock exist now
            tenants.create_tenant(s, "acme")
        side_files = [Path(f"{db}{suffix}") for suffix in ("-wal", "-shm", "-writer.lock")]
        assert all(f.exists() for f in side_files)
        assert {f.name: mode(f) for f in [db, *side_files]} == {f.name: 0o600 for f in [db, *side_files]}
        assert mode(tmp_path / "a") == mode(tmp_path / "a" / "var") == 0o700
        assert mode(tmp_path) == 0o755  # not the gateway's to change
    finally:
        engine.dispose()


def test_a_directory_the_user_chose_keeps_its_mode_but_the_file_is_private(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    db = tmp_path / "mine.db"
    make_engine(f"sqlite:///{db}").dispose()
    assert mode(tmp_path) == 0o755
    assert mode(db) == 0o600


def test_files_an_older_version_left_readable_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)  # what SQLite makes on its own: 644, and its side files alike
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (x)")
    lock = Path(f"{db}-writer.lock")
    lock.touch(0o644)
    side_files = [db, Path(f"{db}-wal"), Path(f"{db}-shm"), lock]
    assert [mode(f) for f in side_files] == [0o644] * 4
    make_engine(f"sqlite:///{db}").dispose()
    assert [mode(f) for f in side_files] == [0o600] * 4
    conn.close()


def test_gateway_migrate_makes_a_private_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "var" / "gateway.db"
    monkeypatch.setenv("GATEWAY_DATABASE_URL", f"sqlite:///{db}")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli.app, ["migrate"])
        assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
        get_engine(f"sqlite:///{db}").dispose()
    assert (mode(db.parent), mode(db)) == (0o700, 0o600)


def test_gateway_up_keeps_the_local_keys_in_a_private_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GW_TEST_ADMIN_KEY", "")
    monkeypatch.delenv("GW_TEST_ADMIN_KEY")  # unset now, and unset again after the test
    cli._ensure_admin_key("GW_TEST_ADMIN_KEY")
    assert os.environ["GW_TEST_ADMIN_KEY"].startswith("gw-admin-")
    assert (mode(tmp_path / "var"), mode(tmp_path / "var" / "admin-key")) == (0o700, 0o600)
