"""Reading a batch's input file in the background: ``POST /v1/batches`` answers at once ("validating")
and the lines flow into the batch lane while the rest of the file is still being read. A Message Batch's
requests (``api.message_requests``) are such a file too, its lines jobs in Anthropic's dialect.

- Chunks grow from ``FIRST_CHUNK`` lines to ``api.max_batch_jobs``: the first lines are queued within a
  fraction of a second, the rest in chunks large enough to be cheap. Every chunk is committed and
  pushed on its own, so memory stays bounded whatever the file's size. A chunk is offered only as far
  as the tenant's batch queue has room (``max_queue_per_tenant``): a file larger than the queue is read
  at the pace the lane drains, never refused.
- The reader holds a lease on the batch's row (``ingest_lease``) and renews ``ingested_at`` before each
  chunk; a renewal that finds the lease gone (another reader took over) or the batch no longer
  validating (cancelled) stops it.
- Crash-safe: every api process sweeps (``Batches.start_housekeeping``) for batches whose reader went
  quiet for ``STALE_S`` (its process died, or Redis or the store failed under it), takes the lease
  over (a compare-and-set on the row, so exactly one does) and reads the file again from the start as
  the key that created the batch: lines that are jobs already are skipped, and each line's job carries
  the idempotency key ``<batch id>:<custom_id>``, so a line is never queued twice even if the old
  reader was only slow. A batch that cannot be read to its end (the key revoked, a whole chunk
  refused, the completion window over) is failed with the reason (``errors``), its queued lines
  cancelled.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sys
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Any, cast

import orjson
from pydantic import ValidationError
from sqlalchemy import CursorResult, select, update

from api.auth import Caller
from api.message_requests import MESSAGES, MessagesLine
from shared.db.models import ApiKey, Batch, Job, utcnow
from shared.db.session import session_scope
from shared.db.tenants import identity_of
from shared.errors import GatewayError, InvalidRequest, Overloaded, Unavailable, echo, is_outage
from shared.lanes import Lane
from shared.schemas import BulkItem, JobRequest

if TYPE_CHECKING:
    from api.batches import Batches

log = logging.getLogger("gateway.batches")

FIRST_CHUNK = 32  # lines in the first chunk: what the caller waits for before the first line is sent
STALE_S = 30.0  # a reader quiet this long is taken over
FULL_WAIT_S = 1.0  # how long a reader waits for room in the tenant's full batch queue


@dataclass
class Tally:
    """A reader's count so far: lines, those refused (error records), and of those, the ones refused
    because the completion window could not be met."""

    lines: int = 0
    invalid: int = 0
    expired: int = 0

    def values(self) -> dict[str, int]:
        return {"lines": self.lines, "invalid": self.invalid, "expired": self.expired}


class LeaseLost(Exception):
    """The batch was cancelled, or another reader took it over: this reader stops."""


def new_lease() -> str:
    return secrets.token_hex(16)


class Ingestion:
    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.engine = batches.gw.engine
        self._readers = threading.BoundedSemaphore(batches.gw.settings.api.max_batch_uploads)

    def start(self, caller: Caller, batch_id: str, lease: str) -> None:
        threading.Thread(target=self.run, args=(caller, batch_id, lease), name=f"ingest-{batch_id}",
                         daemon=True).start()

    def run(self, caller: Caller, batch_id: str, lease: str) -> None:
        """Read the file to its end; an outage leaves the batch to be resumed, anything else fails it.
        At most ``api.max_batch_uploads`` readers work at once in a process (the checks cost CPU the
        fast lane needs); the others wait their turn, renewing their lease."""
        try:
            while not self._readers.acquire(timeout=STALE_S / 3):
                self._renew(batch_id, lease)
            try:
                self._read(caller, batch_id, lease)
            finally:
                self._readers.release()
        except LeaseLost:  # cancelled (or taken over) before its turn came
            with contextlib.suppress(LeaseLost):  # the batch is gone altogether (its tenant deleted)
                self._stopped(self._row(batch_id), lease, None)
        except Exception as exc:  # noqa: BLE001 - whatever a line or the store does, the batch ends clearly
            if is_outage(exc) or isinstance(exc, Unavailable):
                log.warning("batch %s: reading paused by an outage (%r); it is resumed", batch_id, exc)
                return
            if not isinstance(exc, GatewayError):
                log.exception("batch %s could not be read", batch_id)
            self._fail(batch_id, lease, exc)

    # -- one reader ---------------------------------------------------------------------------------

    def _read(self, caller: Caller, batch_id: str, lease: str) -> None:
        batch = self._row(batch_id)
        files = self.batches.files
        if batch.invalid_file:  # a dead reader's partial error records: this reader writes them all again
            files.discard(batch.tenant_id, batch.invalid_file)
        tally = Tally()
        with files.writing(batch.tenant_id, purpose="batch_output",
                           filename=f"{batch.id}_invalid.jsonl") as (invalid_id, invalid):
            try:
                self._renew(batch_id, lease, invalid_file=invalid_id)
                self._lines(caller, batch, lease, invalid, tally)
                read = True
            except LeaseLost:
                read = False
        if not read or not self._close(batch_id, lease, in_progress=True, **tally.values()):
            self._stopped(batch, lease, invalid_id)

    def _lines(self, caller: Caller, batch: Batch, lease: str, out: IO[bytes], tally: Tally) -> None:
        """Every line checked and queued, in growing chunks, counted in ``tally``."""
        queued = self._queued(batch.id)
        seen: set[str] = set()
        chunk: list[tuple[int, str, BulkItem]] = []
        size, largest = FIRST_CHUNK, self.batches.gw.settings.api.max_batch_jobs
        for number, raw in enumerate(self.batches.files.lines(batch.tenant_id, batch.input_file_id), start=1):
            if raw.isspace() or not raw:
                continue
            tally.lines += 1
            parsed = parse_line(raw, number, batch, seen)
            if isinstance(parsed, dict):
                out.write(orjson.dumps(parsed) + b"\n")
                tally.invalid += 1
            elif parsed[1] not in queued:  # a resumed read: what the dead reader queued stands
                chunk.append(parsed)
            if len(chunk) >= size:
                self._flush(caller, batch, lease, chunk, out, tally)
                chunk, size = [], min(size * 2, largest)
        if chunk:
            self._flush(caller, batch, lease, chunk, out, tally)

    def _flush(self, caller: Caller, batch: Batch, lease: str, chunk: list[tuple[int, str, BulkItem]],
               out: IO[bytes], tally: Tally) -> None:
        """Queue ``chunk``, as much at a time as the tenant's batch queue has room for: a file larger than
        the queue's cap is read at the pace the lane drains, never refused. Lines refused on their own."""
        while chunk:
            self._renew(batch.id, lease, **tally.values())
            room = self._room(batch)
            if room <= 0:
                time.sleep(FULL_WAIT_S)
                continue
            part, chunk = chunk[:room], chunk[room:]
            try:
                tally.invalid += self._submit(caller, batch, part, out)
            except Overloaded as exc:
                if exc.code == "deadline_unreachable":  # the lane's backlog outlasts the completion window
                    tally.expired += _refuse_all(part, out, "batch_expired", exc.message)
                    tally.invalid += len(part)
                    continue
                if exc.code != "queue_full":
                    raise
                chunk = part + chunk  # another submitter filled the queue meanwhile
                time.sleep(FULL_WAIT_S)

    def _room(self, batch: Batch) -> int:
        """How many more jobs the tenant's batch queue takes (``max_queue_per_tenant``); past the
        completion window the reader stops waiting for room."""
        gw = self.batches.gw
        if not gw.settings.admission.enabled:
            return sys.maxsize
        cap = gw.settings.lanes[Lane.BATCH].max_queue_per_tenant
        room = cap - int(gw.redis.llen(gw.keys.waiting(Lane.BATCH, batch.tenant_id)))
        if room <= 0 and utcnow() > batch.expires_at:
            raise GatewayError("the completion window ended before the input file was read to its end",
                               code="batch_expired")
        return room

    def _submit(self, caller: Caller, batch: Batch, chunk: list[tuple[int, str, BulkItem]],
                invalid: IO[bytes]) -> int:
        """One chunk through the bulk path, leniently: a line refused on its own is an error record."""
        submitted = self.batches.gw.bulk.submit_many(caller, [item for _, _, item in chunk],
                                                     (batch.id, [custom_id for _, custom_id, _ in chunk]), lenient=True)
        for index, exc in submitted.refused.items():
            _refuse_all([chunk[index]], invalid, exc.code or exc.type, exc.message, exc.status)
        return len(submitted.refused)

    def _queued(self, batch_id: str) -> set[str]:
        with session_scope(self.engine, readonly=True) as db:
            return {c for c in db.scalars(select(Job.custom_id).where(Job.batch_id == batch_id)) if c}

    def _renew(self, batch_id: str, lease: str, **values: Any) -> None:
        """Proof of life before each chunk; LeaseLost when the batch is no longer this reader's."""
        if not self._update(batch_id, lease, "validating", ingested_at=utcnow(), **values):
            raise LeaseLost(batch_id)

    def _close(self, batch_id: str, lease: str, *, in_progress: bool, **values: Any) -> bool:
        """The reader lets go: the batch goes on to run (``in_progress``), or stays as it was set."""
        if in_progress:
            return self._update(batch_id, lease, "validating", ingest_lease=None, status="in_progress", **values)
        return self._update(batch_id, lease, None, ingest_lease=None, **values)

    def _update(self, batch_id: str, lease: str, while_status: str | None, **values: Any) -> bool:
        """Change the row only while ``lease`` holds it (and it is ``while_status``): compare-and-set."""
        query = update(Batch).where(Batch.id == batch_id, Batch.ingest_lease == lease)
        if while_status is not None:
            query = query.where(Batch.status == while_status)
        with session_scope(self.engine) as db:
            return bool(cast(CursorResult[Any], db.execute(query.values(**values))).rowcount)

    def _stopped(self, batch: Batch, lease: str, invalid_id: str | None) -> None:
        """Cancelled while reading: the lines queued meanwhile are cancelled too, and what was read is
        kept for the error file. Taken over: the new reader writes its own error records."""
        kept = {"invalid_file": invalid_id} if invalid_id else {}
        if self._close(batch.id, lease, in_progress=False, **kept):
            self.batches.cancel_queued(batch.id, "batch_cancelled",
                                       "the batch was cancelled before this line was sent")
        elif invalid_id:
            self.batches.files.discard(batch.tenant_id, invalid_id)

    def _fail(self, batch_id: str, lease: str, exc: Exception) -> None:
        """The batch cannot be read to its end: failed with the reason, the lines it queued cancelled."""
        if not isinstance(exc, GatewayError):
            exc = GatewayError("the input file could not be read to its end")
        error = {"code": exc.code or exc.type, "message": exc.message, "param": exc.param, "line": None}
        try:
            if self._update(batch_id, lease, "validating", ingest_lease=None, status="failed", finished_at=utcnow(),
                            errors={"object": "list", "data": [error]}):
                self.batches.cancel_queued(batch_id, "batch_failed", f"the batch failed: {error['message']}")
        except Exception:  # noqa: BLE001 - the store is down: the lease goes stale and a sweep retries
            log.exception("batch %s could not be marked failed", batch_id)

    def _row(self, batch_id: str) -> Batch:
        with session_scope(self.engine, readonly=True) as db:
            batch = db.get(Batch, batch_id)
            if batch is None:
                raise LeaseLost(batch_id)
            db.expunge(batch)
            return batch

    # -- the sweep: readers that died --------------------------------------------------------------------

    def sweep(self) -> int:
        """Take over every batch whose reader went quiet: resume it, or fail it when it cannot be."""
        cutoff = utcnow() - timedelta(seconds=STALE_S)
        with session_scope(self.engine, readonly=True) as db:
            stale: list[tuple[str, str]] = [(b, str(old)) for b, old in db.execute(
                select(Batch.id, Batch.ingest_lease).where(Batch.ingest_lease.is_not(None),
                                                           Batch.ingested_at < cutoff).limit(100))]
        taken = 0
        for batch_id, old in stale:
            lease = new_lease()
            if self._update(batch_id, old, None, ingest_lease=lease, ingested_at=utcnow()):
                taken += 1
                self._take_over(batch_id, lease)
        return taken

    def _take_over(self, batch_id: str, lease: str) -> None:
        batch = self._row(batch_id)
        if batch.status != "validating":  # cancelled while its reader was dying: only the queued lines remain
            self._stopped(batch, lease, "")
            return
        caller = self._caller_of(batch)
        if caller is None:
            self._fail(batch_id, lease, InvalidRequest("the key that created this batch was revoked or deleted "
                                                       "before its file was read", code="key_revoked"))
            return
        log.warning("batch %s: its reader went quiet; reading its file again", batch_id)
        self.start(caller, batch_id, lease)

    def _caller_of(self, batch: Batch) -> Caller | None:
        with session_scope(self.engine, readonly=True) as db:
            key = db.get(ApiKey, batch.key_id) if batch.key_id is not None else None
            if key is None or key.revoked_at is not None or key.tenant_id != batch.tenant_id:
                return None
            return Caller(api_key="", identity=identity_of(key))


def _refuse_all(lines: list[tuple[int, str, BulkItem]], out: IO[bytes], code: str, message: str,
                status: int = 400) -> int:
    """An error record for each of ``lines``; how many."""
    for number, custom_id, _ in lines:
        out.write(orjson.dumps(_error_record(custom_id, code, f"line {number}: {message}", status)) + b"\n")
    return len(lines)


# -- a line ---------------------------------------------------------------------------------------

def parse_line(raw: bytes, number: int, batch: Batch, seen: set[str]) -> tuple[int, str, BulkItem] | dict[str, Any]:
    """A line as (number, custom_id, the job it asks for), or the error record that refuses it. The job's
    idempotency key is the batch's and the line's: a line read twice (a resumed reader) is one job."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _error_record(None, "invalid_json", f"line {number}: not a JSON object", 400)
    custom_id = line.get("custom_id") if isinstance(line, dict) else None
    if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 200:
        return _error_record(None, "missing_custom_id", f"line {number}: custom_id must be a string of 1 to 200 "
                             "characters", 400)
    if custom_id in seen:
        return _error_record(custom_id, "duplicate_custom_id", f"line {number}: custom_id {echo(custom_id)} is "
                             "already used by an earlier line", 400)
    seen.add(custom_id)
    if line.get("method") != "POST" or line.get("url") != batch.endpoint:
        return _error_record(custom_id, "invalid_url", f"line {number}: every line must be method POST to url "
                             f"{batch.endpoint}, as the batch's endpoint", 400)
    body = line.get("body")
    if not isinstance(body, dict):
        return _error_record(custom_id, "invalid_body", f"line {number}: body must be a JSON object", 400)
    try:
        item = _job_of(batch, custom_id, body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return _error_record(custom_id, "invalid_request", f"line {number}: body.{where}: {err['msg']}", 400)
    if item.stream:
        return _error_record(custom_id, "invalid_request", f"line {number}: body.stream: a batch line is not "
                             "streamed", 400)
    return number, custom_id, item


def _job_of(batch: Batch, custom_id: str, body: dict[str, Any]) -> JobRequest | MessagesLine:
    """The job a line asks for, in the batch lane until the batch expires: a chat request, or for a
    Message Batch (``api.message_requests``) the params in Anthropic's dialect, tagged with the batch's feature."""
    tags = {"priority": "batch", "deadline": batch.expires_at.isoformat(), "idempotency_key": f"{batch.id}:{custom_id}"}
    if batch.endpoint == MESSAGES:
        meta = batch.batch_metadata if isinstance(batch.batch_metadata, dict) else {}
        return MessagesLine.of(body, {**tags, "feature": meta.get("feature", "default")})
    metadata = body.get("metadata")
    feature = metadata.get("feature", "default") if isinstance(metadata, dict) else "default"
    return JobRequest.model_validate({**body, **tags, "feature": feature})


def _error_record(custom_id: str | None, code: str, message: str, status: int) -> dict[str, Any]:
    return {"id": f"batch_req_{secrets.token_hex(12)}", "custom_id": custom_id,
            "response": {"status_code": status, "request_id": None,
                         "body": {"error": {"message": message, "type": "invalid_request_error", "code": code}}},
            "error": {"code": code, "message": message}}
