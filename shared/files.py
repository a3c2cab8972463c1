"""Files callers upload (``POST /v1/files``: JSONL for batches) and the output files batches write.

A directory per tenant under ``files.dir``: ``<id>`` holds the bytes, ``<id>.json`` what the Files API
shows (purpose, name, size, time). A tenant reaches only its own folder, and an id that is not
``file-`` and 32 hex digits is not looked up at all, so no id names a path elsewhere. Everything is
streamed: an upload is copied in 1 MiB chunks, a file read line by line, never held whole. Another
backend (object storage) would implement the same few methods.

Every file expires (``expires_at``: its own ``expires_after``, else ``files.expires_s``, 30 days as
OpenAI keeps batch files): from then on it is not found, and ``purge_expired`` deletes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from shared.errors import NotFound, PayloadTooLarge, echo

CHUNK = 1024 * 1024
_ID = re.compile(r"^file-[0-9a-f]{32}$")


class FileStore:
    def __init__(self, root: str | Path, expires_s: int) -> None:
        self.root = Path(root)
        self.expires_s = expires_s

    def save(self, tenant: str, source: IO[bytes], *, purpose: str, filename: str, max_bytes: int,
             expires_s: int | None = None) -> dict[str, Any]:
        """Copy ``source`` in as a new file; a 413 (and nothing kept) past ``max_bytes``."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self._path(tenant, file_id)
        size = 0
        try:
            with path.open("wb") as out:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise PayloadTooLarge(f"file: larger than this gateway's limit of {max_bytes} bytes; "
                                              "split it into several files", param="file")
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return self._describe(tenant, file_id, purpose, filename, size, expires_s)

    @contextlib.contextmanager
    def writing(self, tenant: str, *, purpose: str, filename: str,
                expires_s: int | None = None) -> Iterator[tuple[str, IO[bytes]]]:
        """A new file written by the gateway (a batch's output): (its id, the open file)."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self._path(tenant, file_id)
        with path.open("wb") as out:
            yield file_id, out
        self._describe(tenant, file_id, purpose, filename, path.stat().st_size, expires_s)

    def meta(self, tenant: str, file_id: str) -> dict[str, Any]:
        if not _ID.match(file_id or ""):
            raise NotFound(f"file {echo(file_id)} not found", param="file_id")
        try:
            meta: dict[str, Any] = orjson.loads(self._path(tenant, file_id).with_suffix(".json").read_bytes())
        except FileNotFoundError:
            raise NotFound(f"file {echo(file_id)} not found", param="file_id") from None
        if _expired(meta, time.time()):
            raise NotFound(f"file {echo(file_id)} not found (it expired)", param="file_id")
        return meta

    def chunks(self, tenant: str, file_id: str) -> Iterator[bytes]:
        self.meta(tenant, file_id)
        with self._path(tenant, file_id).open("rb") as src:
            while chunk := src.read(CHUNK):
                yield chunk

    def lines(self, tenant: str, file_id: str) -> Iterator[bytes]:
        self.meta(tenant, file_id)
        with self._path(tenant, file_id).open("rb") as src:
            yield from src

    def count_lines(self, tenant: str, file_id: str) -> int:
        """Its lines, blank ones included, counted by newline in 1 MiB chunks, none parsed (~0.1 s for
        200 MB); 0 when it holds nothing but whitespace."""
        lines, content, last = 0, False, b"\n"
        for chunk in self.chunks(tenant, file_id):
            lines += chunk.count(b"\n")
            content = content or not chunk.isspace()
            last = chunk[-1:]
        return lines + (last != b"\n") if content else 0

    def discard(self, tenant: str, file_id: str) -> None:
        """Remove a file the gateway was writing, listed or not (a reader that was taken over)."""
        if _ID.match(file_id or ""):
            path = self._path(tenant, file_id)
            path.with_suffix(".json").unlink(missing_ok=True)
            path.unlink(missing_ok=True)

    def delete(self, tenant: str, file_id: str) -> dict[str, Any]:
        self.meta(tenant, file_id)
        path = self._path(tenant, file_id)
        path.with_suffix(".json").unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, tenant: str, purpose: str | None = None) -> list[dict[str, Any]]:
        folder = self.root / tenant
        found = [orjson.loads(p.read_bytes()) for p in folder.glob("file-*.json")] if folder.is_dir() else []
        now = time.time()
        found = [f for f in found if (purpose is None or f["purpose"] == purpose) and not _expired(f, now)]
        return sorted(found, key=lambda f: (f["created_at"], f["id"]), reverse=True)

    def purge_expired(self) -> int:
        """Delete every expired file, of every tenant; how many."""
        now, purged = time.time(), 0
        for meta_path in self.root.glob("*/file-*.json"):
            with contextlib.suppress(OSError, orjson.JSONDecodeError):  # another api purged it, or half written
                if _expired(orjson.loads(meta_path.read_bytes()), now):
                    meta_path.unlink(missing_ok=True)
                    meta_path.with_suffix("").unlink(missing_ok=True)
                    purged += 1
        return purged

    def _describe(self, tenant: str, file_id: str, purpose: str, filename: str, size: int,
                  expires_s: int | None) -> dict[str, Any]:
        created = int(time.time())
        meta = {"id": file_id, "object": "file", "bytes": size, "created_at": created,
                "filename": filename, "purpose": purpose, "status": "processed",
                "expires_at": created + (expires_s or self.expires_s), "status_details": None}
        target = self._path(tenant, file_id).with_suffix(".json")
        temp = target.with_suffix(".tmp")
        temp.write_bytes(orjson.dumps(meta))
        os.replace(temp, target)  # listed only once whole
        return meta

    def _path(self, tenant: str, file_id: str) -> Path:
        folder = self.root / tenant
        folder.mkdir(parents=True, exist_ok=True)
        return folder / file_id


def _expired(meta: dict[str, Any], now: float) -> bool:
    expires_at = meta.get("expires_at")
    return isinstance(expires_at, int | float) and expires_at <= now
