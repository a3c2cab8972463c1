"""Anthropic's Message Batches API over the machinery of OpenAI's (``api.batches``): one ``batches`` row
(``endpoint`` /v1/messages, id ``msgbatch_...``), its requests jobs in the batch lane.

    POST /v1/messages/batches   the requests checked whole (``api.message_requests``), a 4xx before anything
                                is written; then kept as a file of the tenant (``shared.files``) that the
                                background ingest reads (``api.batch_ingest``): each request a job with the
                                tenant's fairness and budgets, idempotency key ``<batch id>:<custom_id>``, in
                                Anthropic's dialect; it expires 24 h after creation
    GET  .../{id}, GET (list)   counts read from the jobs (always current); the batch ends once they have
    POST .../{id}/cancel        what is not yet sent is cancelled, as for an OpenAI batch
    GET  .../{id}/results       once ended: a line per request, in the order sent, read from its job then
                                (no output file is written); an answer is Anthropic's message
                                (``openai_to_anthropic_response`` keeps a native one whole)

``batch_metadata`` keeps the batch's feature (``X-Gateway-Feature``) and its number of requests.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import select

from api.auth import Caller
from api.batch_ingest import new_lease
from api.message_requests import MESSAGES, MessageBatchCreate, check_requests, line_of
from shared.db.models import Batch, Job, utcnow
from shared.db.session import session_scope
from shared.errors import Conflict, InvalidRequest, NotFound, echo
from shared.translate import openai_to_anthropic_response

if TYPE_CHECKING:
    from api.batches import Batches

WINDOW = timedelta(hours=24)
PAGE = 1000  # requests whose results are read in one query
CustomIds = list[str]
_ID = re.compile(r"^msgbatch_[0-9a-f]{30}$")  # what ``create`` makes: another id is not looked up at all
# A batch's status as Anthropic's processing_status; every other status is "ended".
PROCESSING = {"validating": "in_progress", "in_progress": "in_progress", "cancelling": "canceling"}


class MessageBatches:
    def __init__(self, batches: Batches) -> None:
        self.batches = batches
        self.engine = batches.gw.engine

    def create(self, caller: Caller, body: MessageBatchCreate, feature: str, base_url: str) -> dict[str, Any]:
        """The batch, in progress: its requests are queued in the background."""
        gw = self.batches.gw
        check_requests(body, gw.settings, gw.model_names(caller))
        batch_id = f"msgbatch_{int(time.time() * 1000):012x}{secrets.token_hex(9)}"  # time first: newest first
        with self.batches.files.writing(caller.tenant, purpose="message_batch",
                                        filename=f"{batch_id}_requests.jsonl") as (file_id, out):
            for request in body.requests:
                out.write(line_of(request))
        now, lease = utcnow(), new_lease()
        with session_scope(self.engine) as db:
            db.add(Batch(id=batch_id, tenant_id=caller.tenant, endpoint=MESSAGES, input_file_id=file_id,
                         completion_window="24h", status="validating", created_at=now, expires_at=now + WINDOW,
                         batch_metadata={"feature": feature, "requests": len(body.requests)}, lines=0, invalid=0,
                         expired=0, key_id=caller.key_id, ingest_lease=lease, ingested_at=now))
        self.batches.ingestion.start(caller, batch_id, lease)
        return self.retrieve(caller, batch_id, base_url)

    def retrieve(self, caller: Caller, batch_id: str, base_url: str) -> dict[str, Any]:
        return _view(*self._current(caller, batch_id), base_url)

    def _current(self, caller: Caller, batch_id: str) -> tuple[Batch, dict[str, int]]:
        if not _ID.match(batch_id):
            raise NotFound(f"message batch {echo(batch_id)} not found", param="message_batch_id")
        return self.batches.current(caller, batch_id, messages=True)

    def list(self, caller: Caller, limit: int, before_id: str | None, after_id: str | None,
             base_url: str) -> dict[str, Any]:
        """Newest first (ids begin with their time); ``after_id`` pages to older, ``before_id`` to newer."""
        if before_id and after_id:
            raise InvalidRequest("give before_id or after_id, not both", param="before_id")
        query = select(Batch.id).where(Batch.tenant_id == caller.tenant, Batch.endpoint == MESSAGES)
        if before_id:
            query = query.where(Batch.id > before_id).order_by(Batch.id.asc())
        else:
            query = query.where(Batch.id < after_id) if after_id else query
            query = query.order_by(Batch.id.desc())
        with session_scope(self.engine, readonly=True) as db:
            ids = list(db.scalars(query.limit(limit + 1)))
        has_more, ids = len(ids) > limit, ids[:limit]
        if before_id:
            ids.reverse()
        return {"data": [self.retrieve(caller, batch_id, base_url) for batch_id in ids], "has_more": has_more,
                "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}

    def cancel(self, caller: Caller, batch_id: str, base_url: str) -> dict[str, Any]:
        self.batches.stop(self._current(caller, batch_id)[0])
        return self.retrieve(caller, batch_id, base_url)

    def results(self, caller: Caller, batch_id: str) -> Iterator[bytes]:
        """The results' lines; a 409 before the batch has ended, a 404 once its requests' file is gone."""
        batch, _ = self._current(caller, batch_id)
        if batch.status in PROCESSING:
            raise Conflict(f"message batch {echo(batch_id)} is still in progress; its results are ready once its "
                           "processing_status is ended")
        try:
            self.batches.files.meta(batch.tenant_id, batch.input_file_id)
        except NotFound:
            raise NotFound(f"the results of message batch {echo(batch_id)} are no longer kept") from None
        return self._results(batch)

    def _results(self, batch: Batch) -> Iterator[bytes]:
        refused = self._refused(batch)
        unread = _errored("the batch failed before this request was queued", "api_error") \
            if batch.status == "failed" else {"type": "canceled"}
        page: CustomIds = []
        for raw in self.batches.files.lines(batch.tenant_id, batch.input_file_id):
            page.append(orjson.loads(raw)["custom_id"])  # the gateway's own file (``line_of``)
            if len(page) == PAGE:
                yield from self._page(batch, page, refused, unread)
                page = []
        yield from self._page(batch, page, refused, unread)

    def _page(self, batch: Batch, custom_ids: CustomIds, refused: dict[str, dict[str, Any]],
              unread: dict[str, Any]) -> Iterator[bytes]:
        with session_scope(self.engine, readonly=True) as db:
            rows = db.execute(select(Job.custom_id, Job.status, Job.model, Job.result, Job.error).where(
                Job.batch_id == batch.id, Job.custom_id.in_(custom_ids)))
            ended = {row.custom_id: _result(row.status, row.model, row.result, row.error) for row in rows}
        for custom_id in custom_ids:
            result = ended.get(custom_id) or refused.get(custom_id) or unread
            yield orjson.dumps({"custom_id": custom_id, "result": result}) + b"\n"

    def _refused(self, batch: Batch) -> dict[str, dict[str, Any]]:
        """The requests the ingest refused (a budget, a deadline out of reach ...), by custom_id."""
        if not batch.invalid_file:
            return {}
        refused = {}
        for raw in self.batches.files.lines(batch.tenant_id, batch.invalid_file):
            record = orjson.loads(raw)  # ``api.batch_ingest``'s error records
            error = record.get("error") or {}
            refused[str(record.get("custom_id"))] = {"type": "expired"} if error.get("code") == "batch_expired" \
                else _errored(str(error.get("message")), "invalid_request_error")
        return refused


def _result(status: str, model: str, answer: Any, error: Any) -> dict[str, Any] | None:
    """A job's result in Anthropic's form; None while it has not ended."""
    if status == "succeeded":
        if not isinstance(answer, dict):
            return _errored("the answer is no longer kept (the gateway's retention)", "api_error")
        return {"type": "succeeded", "message": openai_to_anthropic_response(answer, model)}
    if status in ("cancelled", "expired"):
        return {"type": "canceled" if status == "cancelled" else "expired"}
    if status == "failed":
        message = error.get("message") if isinstance(error, dict) else None
        return _errored(str(message or "the request failed"), "api_error")
    return None


def _errored(message: str, kind: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message}}}


def _view(batch: Batch, counts: dict[str, int], base_url: str) -> dict[str, Any]:
    status = PROCESSING.get(batch.status, "ended")
    ended = status == "ended"
    return {
        "id": batch.id, "type": "message_batch", "processing_status": status,
        "request_counts": _request_counts(batch, counts, ended),
        "created_at": _rfc3339(batch.created_at), "expires_at": _rfc3339(batch.expires_at),
        "ended_at": _rfc3339(batch.finished_at) if ended else None,
        "cancel_initiated_at": _rfc3339(batch.cancelled_at), "archived_at": None,
        "results_url": f"{base_url}v1/messages/batches/{batch.id}/results" if ended else None,
    }


def _request_counts(batch: Batch, counts: dict[str, int], ended: bool) -> dict[str, int]:
    """From the jobs and the requests the ingest refused; those never queued (cancelled or failed while the
    file was read) count as processing until the batch ends, then as canceled (errored if it failed)."""
    meta = batch.batch_metadata if isinstance(batch.batch_metadata, dict) else {}
    total = meta.get("requests", 0)
    total = total if isinstance(total, int) else 0
    out = {"processing": 0, "succeeded": counts.get("succeeded", 0),
           "errored": counts.get("failed", 0) + batch.invalid - batch.expired,
           "canceled": counts.get("cancelled", 0), "expired": counts.get("expired", 0) + batch.expired}
    rest = max(0, total - sum(out.values()))
    out["processing" if not ended else "errored" if batch.status == "failed" else "canceled"] += rest
    return out


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat().replace("+00:00", "Z")
