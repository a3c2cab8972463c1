"""Files callers upload (``POST /v1/files``: JSONL for batches) and the output files batches write.

A directory per tenant under ``files.dir``: ``<id>`` holds the bytes, ``<id>.json`` what the Files API
shows (purpose, name, size, time). A tenant reaches only its own folder, and an id that is not
``file-`` and 32 hex digits is not looked up at all, so no id names a path elsewhere. Everything is
streamed: an upload is copied in 1 MiB chunks, a file read line by line, never held whole. Another
backend (object storage) would implement the same few methods.
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
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def save(self, tenant: str, source: IO[bytes], *, purpose: str, filename: str, max_bytes: int) -> dict[str, Any]:
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
        return self._describe(tenant, file_id, purpose, filename, size)

    @contextlib.contextmanager
    def writing(self, tenant: str, *, purpose: str, filename: str) -> Iterator[tuple[str, IO[bytes]]]:
        """A new file written by the gateway (a batch's output): (its id, the open file)."""
        file_id = f"file-{uuid.uuid4().hex}"
        path = self._path(tenant, file_id)
        with path.open("wb") as out:
            yield file_id, out
        self._describe(tenant, file_id, purpose, filename, path.stat().st_size)

    def meta(self, tenant: str, file_id: str) -> dict[str, Any]:
        if not _ID.match(file_id or ""):
            raise NotFound(f"file {echo(file_id)} not found", param="file_id")
        try:
            meta: dict[str, Any] = orjson.loads(self._path(tenant, file_id).with_suffix(".json").read_bytes())
            return meta
        except FileNotFoundError:
            raise NotFound(f"file {echo(file_id)} not found", param="file_id") from None

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
        """Lines that are not blank, read a line at a time (a 200 MB file in a fraction of a second)."""
        with self._path(tenant, self.meta(tenant, file_id)["id"]).open("rb") as src:
            return sum(1 for line in src if not line.isspace())

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
        found = [f for f in found if purpose is None or f["purpose"] == purpose]
        return sorted(found, key=lambda f: (f["created_at"], f["id"]), reverse=True)

    def _describe(self, tenant: str, file_id: str, purpose: str, filename: str, size: int) -> dict[str, Any]:
        meta = {"id": file_id, "object": "file", "bytes": size, "created_at": int(time.time()),
                "filename": filename, "purpose": purpose, "status": "processed", "expires_at": None,
                "status_details": None}
        target = self._path(tenant, file_id).with_suffix(".json")
        temp = target.with_suffix(".tmp")
        temp.write_bytes(orjson.dumps(meta))
        os.replace(temp, target)  # listed only once whole
        return meta

    def _path(self, tenant: str, file_id: str) -> Path:
        folder = self.root / tenant
        folder.mkdir(parents=True, exist_ok=True)
        return folder / file_id
