"""The file store (``shared.files``): an expired file is not found, not listed, and purged from disk."""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

from shared.errors import NotFound
from shared.files import FileStore


def _expire(store: FileStore, tenant: str, file_id: str) -> None:
    """What time does to a file: its expiry moved into the past."""
    meta_path = store.root / tenant / f"{file_id}.json"
    meta = orjson.loads(meta_path.read_bytes())
    meta_path.write_bytes(orjson.dumps({**meta, "expires_at": meta["created_at"] - 1}))


def test_an_expired_file_is_gone_and_purged(tmp_path: Path) -> None:
    store = FileStore(tmp_path, expires_s=3600)
    old = store.save("acme", io.BytesIO(b"{}\n"), purpose="batch", filename="a.jsonl", max_bytes=100)
    new = store.save("acme", io.BytesIO(b"{}\n"), purpose="batch", filename="b.jsonl", max_bytes=100)
    assert old["expires_at"] == old["created_at"] + 3600
    _expire(store, "acme", old["id"])
    with pytest.raises(NotFound):
        store.meta("acme", old["id"])
    assert [f["id"] for f in store.list("acme")] == [new["id"]]
    assert store.purge_expired() == 1
    assert not (tmp_path / "acme" / old["id"]).exists() and not (tmp_path / "acme" / f"{old['id']}.json").exists()
    assert store.meta("acme", new["id"])["id"] == new["id"]


def test_a_file_being_written_or_broken_never_stops_the_purge(tmp_path: Path) -> None:
    store = FileStore(tmp_path, expires_s=3600)
    kept = store.save("acme", io.BytesIO(b"{}\n"), purpose="batch", filename="a.jsonl", max_bytes=100)
    (tmp_path / "acme" / "file-broken.json").write_bytes(b"{not json")
    assert store.purge_expired() == 0
    assert store.meta("acme", kept["id"])["expires_at"] == kept["created_at"] + 3600


@pytest.mark.parametrize(("content", "lines"), [(b"", 0), (b"\n \n\t\n", 0), (b"{}", 1), (b"{}\n", 1),
                                                 (b"{}\n{}", 2), (b"{}\n\n{}\n", 3)])
def test_lines_are_counted_by_newline_without_parsing(tmp_path: Path, content: bytes, lines: int) -> None:
    store = FileStore(tmp_path, expires_s=3600)
    saved = store.save("acme", io.BytesIO(content), purpose="batch", filename="a.jsonl", max_bytes=100)
    assert store.count_lines("acme", saved["id"]) == lines
