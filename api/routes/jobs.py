"""The native jobs API: submit (async, or wait up to N seconds), submit in bulk, fetch, list, cancel, and
resume a job's stream."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answers import JobBatch, JobPage, JobView
from api.auth import Caller
from api.bulk import BatchSubmitted
from api.delivery import anthropic_sse, completion_sse, gateway_headers, openai_sse, screen_headers, view_when_done
from api.deps import CallerDep, GatewayDep, StreamsDep, SubmitterDep, WaiterDep, parse_body, read_body
from api.gateway import Gateway
from api.metrics import SHED, SUBMITTED
from api.openapi import BODY, JOB_HEADERS, TENANT_KEY, answer, body_of, errors, header, job_links, sse
from api.responses import OrjsonResponse
from api.routes.common import _BULK, CacheControlHeader, IdempotencyHeader, cache_mode, submit_and_wait, submit_early
from api.streaming import replay
from api.waiter import CompletionWaiter
from shared.db.jobs import STATUSES
from shared.db.models import TERMINAL_STATUSES
from shared.errors import InvalidRequest, Overloaded, Unavailable, echo
from shared.lanes import Lane
from shared.schemas import JobBatchRequest, JobRequest
from shared.translate import openai_to_anthropic_response

router = APIRouter()
_uploads: dict[int, asyncio.Semaphore] = {}  # per event loop (the api's, and each test client's)


@router.post("/v1/jobs", status_code=202, openapi_extra=body_of(JobRequest), responses={
    202: answer(JobView, "The job, accepted", headers=JOB_HEADERS, links=job_links()),
    200: answer(JobView, "With `wait`: the job when the wait ended (finished, or still running); the headers, "
                "naming the job, are sent at once. Without: the job an `idempotency_key` already made",
                headers=JOB_HEADERS, links=job_links()),
    **errors(*BODY, *TENANT_KEY, 404, 409)})
async def submit_job(
    request: Request, caller: SubmitterDep, gw: GatewayDep, waiter: WaiterDep,
    wait: Annotated[float | None, Query(ge=0, le=86_400, description="seconds to wait for the result")] = None,
    idempotency_key: IdempotencyHeader = None, cache_control: CacheControlHeader = None,
) -> Response:
    body = await read_body(request, JobRequest)
    tags = body.tags()
    if idempotency_key and not tags.idempotency_key:
        tags.idempotency_key = idempotency_key
    if tags.cache == "default" and (mode := cache_mode(cache_control)):
        tags.cache = mode
    if wait:  # the job's id goes out before the wait: a caller whose connection drops can still find it
        wait_s = min(wait, gw.settings.api.max_sync_wait_s)
        stored, finish = await submit_early(gw, waiter, caller, body.chat(), tags, wait_s, Lane.STANDARD)
        return StreamingResponse(view_when_done(gw, finish, stored["id"]), media_type="application/json",
                                 headers=gateway_headers(stored))
    submitted, _ = await submit_and_wait(gw, waiter, caller, body.chat(), tags, None, default_lane=Lane.STANDARD)
    view = submitted.view
    return OrjsonResponse(view, status_code=202 if submitted.created else 200,
                          headers=gateway_headers(view) | screen_headers(submitted.screening))


@router.post("/v1/jobs/batch", status_code=202, openapi_extra=body_of(JobBatchRequest), responses={
    202: answer(JobBatch, "The jobs, in the order sent", links=job_links("$response.body#/data/0/id"), headers={
        "x-gateway-jobs-created": header("how many of them are new (the rest repeat an idempotency key)", r"^\d+$")}),
    **errors(*BODY, *TENANT_KEY, 409)})
async def submit_jobs(request: Request, caller: CallerDep, gw: GatewayDep) -> OrjsonResponse:
    """Many jobs in one request, all or nothing; each is queued for the scheduler (never admitted inline).

    The key is checked before the body is read, and at most ``api.max_batch_uploads`` bodies are read
    at once per process (the others wait unread), so large bodies cannot exhaust the api's memory.
    The body is parsed and validated in the bulk submit thread, with the rest of the work, so a
    large batch never holds the event loop that interactive calls are answered on.
    """
    async with _upload_turn(gw):
        raw = await request.body()
        batch = await anyio.to_thread.run_sync(_submit_batch, gw, caller, raw, limiter=_BULK)
    return OrjsonResponse({"object": "list", "data": batch.views}, status_code=202,
                          headers={"x-gateway-jobs-created": str(batch.created)})


@contextlib.asynccontextmanager
async def _upload_turn(gw: Gateway) -> AsyncIterator[None]:
    loop = id(asyncio.get_running_loop())
    turns = _uploads.get(loop) or _uploads.setdefault(loop, asyncio.Semaphore(gw.settings.api.max_batch_uploads))
    try:
        await asyncio.wait_for(turns.acquire(), gw.settings.api.batch_upload_wait_s)
    except TimeoutError:
        raise Unavailable("Too many batch uploads are in progress on this api process; retry shortly.",
                          code="too_many_uploads", headers={"retry-after": "5"}) from None
    try:
        yield
    finally:
        turns.release()


def _submit_batch(gw: Gateway, caller: Caller, raw: bytes) -> BatchSubmitted:
    items = parse_body(raw, JobBatchRequest, {"max_jobs": gw.settings.api.max_batch_jobs}).jobs
    try:
        batch = gw.bulk.submit_many(caller, items)
    except Overloaded as exc:
        SHED.labels(reason=exc.code or "overloaded").inc(len(items))
        raise
    for lane, count in _count_by_lane(batch).items():
        SUBMITTED.labels(lane=lane, admitted_inline="False").inc(count)
    return batch


def _count_by_lane(batch: BatchSubmitted) -> dict[str, int]:
    counts: dict[str, int] = {}
    for view in batch.views:
        counts[view["priority"]] = counts.get(view["priority"], 0) + 1
    return counts


WaitQuery = Annotated[float | None, Query(ge=0, le=86_400, description=(
    "seconds to wait for the job(s) to end (long-poll; capped at api.max_sync_wait_s): the answer comes as "
    "soon as they have, or when the wait ends, with the jobs as they are then"))]


@router.get("/v1/jobs/{job_id}", responses={200: answer(JobView, "The job", headers=JOB_HEADERS),
                                            **errors(*TENANT_KEY, 400, 404)})
async def get_job(job_id: str, caller: CallerDep, gw: GatewayDep, waiter: WaiterDep,
                  wait: WaitQuery = None) -> OrjsonResponse:
    if wait:
        view = (await _long_poll(gw, waiter, caller, [job_id], wait))[0]
    else:
        view = await run_in_threadpool(gw.get, caller, job_id)
    return OrjsonResponse(view, headers=gateway_headers(view))


@router.get("/v1/jobs/{job_id}/stream", response_model=None, responses={
    200: {"description": "The job's stream, from after `Last-Event-ID`: its events as the caller was sent them "
                         "while the stream is kept (`streaming.keep_s`), followed while the job runs; after that, "
                         "or for a job that did not stream, its stored answer as events",
          "headers": JOB_HEADERS, "content": sse("an event of the job's dialect, with its `id`")},
    **errors(*TENANT_KEY, 400, 404)})
async def stream_job(
    job_id: str, caller: CallerDep, gw: GatewayDep, streams: StreamsDep,
    last_event_id: Annotated[str | None, Header(
        description="the `id` of the last event received: the stream resumes after it",
        json_schema_extra={"pattern": r"^\d{1,9}$"})] = None,
    dialect: Annotated[Literal["openai", "anthropic"] | None, Query(
        description="the events' dialect when the job's stream is no longer kept (a kept stream is replayed in "
                    "the dialect it was streamed in)")] = None,
) -> StreamingResponse:
    view = await run_in_threadpool(gw.get, caller, job_id)
    after = _last_event(last_event_id)
    events = replay(streams, job_id, dialect or "openai", after, lambda: run_in_threadpool(gw.get, caller, job_id),
                    _stored_events, gw.settings.api.max_sync_wait_s)
    return StreamingResponse(events, media_type="text/event-stream", headers=gateway_headers(view))


def _last_event(value: str | None) -> int:
    if value is None:
        return -1
    if not value.strip().isdigit() or len(value.strip()) > 9:
        raise InvalidRequest(f"Last-Event-ID {echo(value)} is not an event id: send the `id` of the last event "
                             "received (a whole number), or no header to read the stream from its start.",
                             param="Last-Event-ID")
    return int(value.strip())


def _stored_events(dialect: str, result: dict[str, Any]) -> Iterator[bytes]:
    """A stored answer as the events of ``dialect`` (the job's stream is gone, or it never streamed)."""
    if dialect == "anthropic":
        return anthropic_sse(openai_to_anthropic_response(result, str(result.get("model") or "")))
    if result.get("object") == "text_completion":  # a legacy completion is replayed in its own form
        return completion_sse(result, include_usage=True)
    return openai_sse(result, include_usage=True)


@router.get("/v1/jobs", responses={200: answer(JobPage, "One page of the tenant's jobs, newest first; with "
                                                        "`ids`, those jobs in that order"),
                                    **errors(*TENANT_KEY, 400, 404)})
async def list_jobs(
    caller: CallerDep, gw: GatewayDep, waiter: WaiterDep,
    status: Annotated[str | None, Query(json_schema_extra={"enum": list(STATUSES)})] = None,
    feature: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: str | None = None,
    ids: Annotated[str | None, Query(max_length=MAX_IDS * 40, description=(
        f"up to {MAX_IDS} job ids, comma-separated: these jobs (with `wait`: once all have ended)"))] = None,
    wait: WaitQuery = None,
) -> OrjsonResponse:
    if ids is not None:
        job_ids = _job_ids(ids)
        views = await _long_poll(gw, waiter, caller, job_ids, wait or 0)
        return OrjsonResponse({"object": "list", "data": views, "has_more": False, "next_cursor": None})
    if wait:
        raise InvalidRequest("wait needs ids: name the jobs to wait for (ids=job_a,job_b)", param="wait")
    page = await run_in_threadpool(gw.list, caller, status=status, feature=feature, limit=limit,
                                   cursor=cursor)
    return OrjsonResponse(page)


MAX_IDS = 100
_RECHECK_S = 2.0  # a long-poll reads the store at least this often (an end announcement is not kept)


def _job_ids(ids: str) -> list[str]:
    job_ids = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))
    if not job_ids or len(job_ids) > MAX_IDS:
        raise InvalidRequest(f"ids takes 1 to {MAX_IDS} job ids, comma-separated", param="ids")
    return job_ids


async def _long_poll(gw: Gateway, waiter: CompletionWaiter, caller: Caller, job_ids: list[str],
                     wait: float) -> list[dict[str, Any]]:
    """The jobs once every one of them has ended, or as they are when ``wait`` seconds have passed: woken
    by their tenant's end announcements, reading the store at least every ``_RECHECK_S``."""
    deadline = time.monotonic() + min(wait, gw.settings.api.max_sync_wait_s)
    while True:
        views = await run_in_threadpool(gw.views, caller, job_ids)
        running = {v["id"] for v in views if v["status"] not in TERMINAL_STATUSES}
        left = deadline - time.monotonic()
        if not running or left <= 0:
            return views
        await waiter.any_ended(caller.tenant, running, min(_RECHECK_S, left))


@router.delete("/v1/jobs/{job_id}", responses={200: answer(JobView, "The job, cancelled", headers=JOB_HEADERS),
                                               **errors(*TENANT_KEY, 404, 409)})
async def cancel_job(job_id: str, caller: CallerDep, gw: GatewayDep) -> OrjsonResponse:
    view = await run_in_threadpool(gw.cancel, caller, job_id)
    return OrjsonResponse(view, headers=gateway_headers(view))
