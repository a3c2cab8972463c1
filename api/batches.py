"""OpenAI's Batch API over the gateway's own batch lane: each line of the input file becomes a job.

    POST /v1/batches        answers at once ("validating"); the file is read in the background
                            (``api.batch_ingest``), each line checked on its own (JSON, custom_id unique,
                            method POST, url the batch's endpoint, a body ``POST /v1/jobs`` would take, a
                            model the key may use): a bad line is an error record, the others are queued
                            in chunks through ``api.bulk`` in the batch lane, so tenant fairness, budgets
                            and caps apply; their deadline is the end of the completion window
    GET  /v1/batches/{id}   request counts read from the jobs (always current); once every line has ended,
                            the output and error files are written (OpenAI's line format, with custom_id)
    POST .../cancel         the lines not yet sent are cancelled; those in flight finish

Lines that did not end in time end as expired (the scheduler sheds them at their deadline) and are
error records (``batch_expired``). Memory stays bounded: the file is read line by line and queued in
chunks of at most ``api.max_batch_jobs``; the output is written page by page.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import orjson
import redis
from sqlalchemy import CursorResult, func, select, update

from api.auth import Caller
from api.batch_ingest import Ingestion, new_lease
from api.message_requests import MESSAGES
from shared.db.models import Batch, Job, utcnow
from shared.db.session import session_scope
from shared.errors import InvalidRequest, NotFound, echo
from shared.files import FileStore

if TYPE_CHECKING:
    from api.gateway import Gateway

log = logging.getLogger("gateway.batches")

ENDPOINTS = ("/v1/chat/completions",)
WINDOWS = {"24h": timedelta(hours=24)}
OPEN = ("queued", "admitted", "running")
PAGE = 1000
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 30 * 86400  # expires_after's bounds, as OpenAI's
SWEEP_S = 5.0  # how often each api looks for batches whose reader died
PURGE_S = 60.0  # how often it deletes expired files


class Batches:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.files = FileStore(gw.settings.files.dir, gw.settings.files.expires_s)
        self.ingestion = Ingestion(self)
        self._stopping = threading.Event()

    def start_housekeeping(self) -> None:
        """In every api process: resume batches whose reader died (``api.batch_ingest``), delete expired files."""
        threading.Thread(target=self._housekeeping, name="batches-housekeeping", daemon=True).start()

    def stop_housekeeping(self) -> None:
        self._stopping.set()

    def _housekeeping(self) -> None:
        purged_at = 0.0
        while not self._stopping.wait(SWEEP_S):
            try:
                self.ingestion.sweep()
                if time.monotonic() - purged_at >= PURGE_S:
                    purged_at = time.monotonic()
                    self.files.purge_expired()
            except Exception:  # noqa: BLE001 - the next round tries again
                log.exception("batch housekeeping failed")

    # -- create ------------------------------------------------------------------------------------

    def create(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        """The batch, "validating": its file is read in the background (``api.batch_ingest``). What can
        be known at once is a 4xx before anything is written: the body, the file, its number of lines."""
        endpoint, window, input_file = _checked_body(body)
        output_expires_s = expires_after(body.get("output_expires_after"), "output_expires_after")
        meta = self.files.meta(caller.tenant, input_file)
        if meta["purpose"] != "batch":
            raise InvalidRequest(f"input_file_id: {input_file} was uploaded with purpose {meta['purpose']!r}; a "
                                 "batch reads files uploaded with purpose 'batch'", param="input_file_id")
        self._check_lines(caller.tenant, input_file)
        now, lease = utcnow(), new_lease()
        batch = Batch(id=f"batch_{secrets.token_hex(12)}", tenant_id=caller.tenant, endpoint=endpoint,
                      input_file_id=input_file, completion_window=window, status="validating", created_at=now,
                      expires_at=now + WINDOWS[window], batch_metadata=body.get("metadata"), lines=0, invalid=0,
                      expired=0,
                      key_id=caller.key_id, ingest_lease=lease, ingested_at=now, output_expires_s=output_expires_s)
        with session_scope(self.gw.engine) as db:
            db.add(batch)  # first: every job it queues names a batch that exists
        self.ingestion.start(caller, batch.id, lease)
        return self.retrieve(caller, batch.id)

    def _check_lines(self, tenant: str, file_id: str) -> None:
        lines, limit = self.files.count_lines(tenant, file_id), self.gw.settings.files.max_lines
        if lines == 0:
            raise InvalidRequest("input_file_id: the file has no lines", param="input_file_id")
        if lines > limit:
            raise InvalidRequest(f"input_file_id: more than {limit} lines; split the file", param="input_file_id")

    def cancel_queued(self, batch_id: str, code: str, message: str) -> None:
        """The batch's lines not yet sent end as cancelled (those in flight finish), and leave the queues at
        once (``WaitingQueues.cancel``): a cancelled overnight batch stops taking turns at the budget."""
        now = utcnow()
        with session_scope(self.gw.engine) as db:
            cancelled = db.execute(update(Job).where(Job.batch_id == batch_id, Job.status == "queued").values(
                status="cancelled", finished_at=now, updated_at=now, error={"type": code, "message": message},
            ).returning(Job.id).execution_options(synchronize_session=False)).scalars().all()
        with contextlib.suppress(redis.RedisError, OSError):  # else they are dropped at admission
            self.gw.queues.cancel(list(cancelled))

    # -- read --------------------------------------------------------------------------------------

    def retrieve(self, caller: Caller, batch_id: str) -> dict[str, Any]:
        return _view(*self.current(caller, batch_id))

    def current(self, caller: Caller, batch_id: str, *, messages: bool = False) -> tuple[Batch, dict[str, int]]:
        """The batch and its jobs' counts by status; a batch whose lines have all ended is finished first."""
        batch = self.get(caller, batch_id, messages=messages)
        counts = self.counts(batch.id)
        if (batch.status in ("in_progress", "cancelling") and batch.ingest_lease is None
                and not any(counts.get(s) for s in OPEN)):
            self._finish(caller, batch, counts)
            batch = self.get(caller, batch_id, messages=messages)
        return batch, counts

    def list(self, caller: Caller, limit: int, after: str | None) -> dict[str, Any]:
        with session_scope(self.gw.engine, readonly=True) as db:
            query = select(Batch.id).where(Batch.tenant_id == caller.tenant, Batch.endpoint != MESSAGES).order_by(
                Batch.id.desc()).limit(limit + 1)
            if after:
                query = query.where(Batch.id < after)
            ids = list(db.scalars(query))
        data = [self.retrieve(caller, batch_id) for batch_id in ids[:limit]]
        return {"object": "list", "data": data, "first_id": ids[0] if ids else None,
                "last_id": ids[min(limit, len(ids)) - 1] if ids else None, "has_more": len(ids) > limit}

    def cancel(self, caller: Caller, batch_id: str) -> dict[str, Any]:
        self.stop(self.get(caller, batch_id))
        return self.retrieve(caller, batch_id)

    def stop(self, batch: Batch) -> None:
        """Cancel: a reader still at work stops at its next chunk, the lines not yet sent are cancelled."""
        if batch.status in ("validating", "in_progress"):
            with session_scope(self.gw.engine) as db:
                db.execute(update(Batch).where(Batch.id == batch.id, Batch.status.in_(("validating", "in_progress")))
                           .values(status="cancelling", cancelled_at=utcnow()))
            self.cancel_queued(batch.id, "batch_cancelled", "the batch was cancelled before this line was sent")

    def get(self, caller: Caller, batch_id: str, *, messages: bool = False) -> Batch:
        """The caller's batch: an OpenAI one, or with ``messages`` a Message Batch (``api.message_batches``)."""
        with session_scope(self.gw.engine, readonly=True) as db:
            batch = db.get(Batch, batch_id)
            if batch is None or batch.tenant_id != caller.tenant or (batch.endpoint == MESSAGES) != messages:
                kind = "message batch" if messages else "batch"
                raise NotFound(f"{kind} {echo(batch_id)} not found", param="batch_id")
            db.expunge(batch)
            return batch

    def counts(self, batch_id: str) -> dict[str, int]:
        with session_scope(self.gw.engine, readonly=True) as db:
            rows = db.execute(select(Job.status, func.count()).where(Job.batch_id == batch_id).group_by(Job.status))
            return {status: int(n) for status, n in rows}

    # -- finish ------------------------------------------------------------------------------------

    def _finish(self, caller: Caller, batch: Batch, counts: dict[str, int]) -> None:
        """Every line has ended: write the output and error files, then close the batch (once)."""
        output_id, error_id = (None, None) if batch.endpoint == MESSAGES else self._write_outputs(batch, counts)
        status = "cancelled" if batch.status == "cancelling" else (
            "expired" if counts.get("expired") or batch.expired else "completed")
        with session_scope(self.gw.engine) as db:
            done = cast(CursorResult[Any], db.execute(
                update(Batch).where(Batch.id == batch.id, Batch.status == batch.status).values(
                    status=status, finished_at=utcnow(), output_file_id=output_id, error_file_id=error_id))).rowcount
        if not done:  # another reader closed it first: its files stand
            for file_id in (output_id, error_id):
                if file_id:
                    self.files.delete(caller.tenant, file_id)

    def _write_outputs(self, batch: Batch, counts: dict[str, int]) -> tuple[str | None, str | None]:
        """The output and error files, in OpenAI's line format (a Message Batch's results are read from its
        jobs when asked for, ``api.message_batches``)."""
        tenant = batch.tenant_id
        output_id = error_id = None
        if counts.get("succeeded"):
            with self.files.writing(tenant, purpose="batch_output", filename=f"{batch.id}_output.jsonl",
                                    expires_s=batch.output_expires_s) as (output_id, out):
                for job in self._jobs(batch.id, ("succeeded",)):
                    out.write(orjson.dumps(_output_record(job)) + b"\n")
        if batch.invalid or any(counts.get(s) for s in ("failed", "cancelled", "expired")):
            with self.files.writing(tenant, purpose="batch_output", filename=f"{batch.id}_error.jsonl",
                                    expires_s=batch.output_expires_s) as (error_id, out):
                for chunk in self.files.chunks(tenant, batch.invalid_file or ""):
                    out.write(chunk)
                for job in self._jobs(batch.id, ("failed", "cancelled", "expired")):
                    out.write(orjson.dumps(_failed_record(job)) + b"\n")
        return output_id, error_id

    def _jobs(self, batch_id: str, statuses: tuple[str, ...]) -> Iterator[Job]:
        """The batch's jobs in these statuses, a page at a time."""
        after = ""
        while True:
            with session_scope(self.gw.engine, readonly=True) as db:
                page = list(db.scalars(select(Job).where(Job.batch_id == batch_id, Job.status.in_(statuses),
                                                         Job.id > after).order_by(Job.id).limit(PAGE)))
                for job in page:
                    db.expunge(job)
            yield from page
            if len(page) < PAGE:
                return
            after = page[-1].id


def expires_after(value: Any, param: str) -> int | None:
    """OpenAI's ``expires_after`` ({anchor: created_at, seconds: 3600 to 30 days}) as seconds, or None."""
    if value is None:
        return None
    seconds = value.get("seconds") if isinstance(value, dict) else None
    if (not isinstance(value, dict) or value.get("anchor") != "created_at" or set(value) - {"anchor", "seconds"}
            or type(seconds) is not int or not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S):
        raise InvalidRequest(f"{param}: {{anchor: created_at, seconds: {MIN_EXPIRY_S} to {MAX_EXPIRY_S}}}",
                             param=param)
    return seconds


def _checked_body(body: dict[str, Any]) -> tuple[str, str, str]:
    endpoint, window, input_file = body.get("endpoint"), body.get("completion_window"), body.get("input_file_id")
    if endpoint not in ENDPOINTS:
        raise InvalidRequest(f"endpoint: {echo(endpoint)} is not served in batches; use one of "
                             f"{', '.join(ENDPOINTS)}", param="endpoint")
    if window not in WINDOWS:
        raise InvalidRequest(f"completion_window: {echo(window)}; use 24h", param="completion_window")
    if not isinstance(input_file, str) or not input_file:
        raise InvalidRequest("input_file_id: the id of a file uploaded with purpose 'batch'", param="input_file_id")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512 for k, v in metadata.items())):
        raise InvalidRequest("metadata: at most 16 string keys (64 characters) and values (512)", param="metadata")
    return endpoint, window, input_file


def _output_record(job: Job) -> dict[str, Any]:
    return {"id": f"batch_req_{job.id}", "custom_id": job.custom_id,
            "response": {"status_code": 200, "request_id": job.id, "body": job.result}, "error": None}


_FAILED = {"cancelled": "batch_cancelled", "expired": "batch_expired"}


def _failed_record(job: Job) -> dict[str, Any]:
    error = job.error or {}
    code = _FAILED.get(job.status) or str(error.get("type") or "failed")
    message = str(error.get("message") or job.status)
    return {"id": f"batch_req_{job.id}", "custom_id": job.custom_id,
            "response": {"status_code": 500 if job.status == "failed" else 408, "request_id": job.id,
                         "body": {"error": {"message": message, "type": "api_error", "code": code}}},
            "error": {"code": code, "message": message}}


def _view(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    done = counts.get("succeeded", 0)
    failed = batch.invalid + sum(counts.get(s, 0) for s in ("failed", "cancelled", "expired"))
    return {
        "id": batch.id, "object": "batch", "endpoint": batch.endpoint, "errors": batch.errors,
        "input_file_id": batch.input_file_id, "completion_window": batch.completion_window,
        "status": batch.status, "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
        "created_at": _unix(batch.created_at),
        "in_progress_at": None if batch.status in ("validating", "failed") else _unix(batch.created_at),
        "expires_at": _unix(batch.expires_at), "finalizing_at": None,
        "completed_at": _when(batch, "completed"), "failed_at": _when(batch, "failed"),
        "expired_at": _when(batch, "expired"), "cancelling_at": _unix(batch.cancelled_at),
        "cancelled_at": _when(batch, "cancelled"),
        "request_counts": {"total": batch.lines, "completed": done, "failed": failed},
        "metadata": batch.batch_metadata,
    }


def _when(batch: Batch, status: str) -> int | None:
    return _unix(batch.finished_at) if batch.status == status else None


def _unix(moment: datetime | None) -> int | None:
    if moment is None:
        return None
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())

