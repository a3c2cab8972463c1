"""The native jobs API: submit (async, or wait up to N seconds), submit in bulk, fetch, list, cancel."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from api.delivery import gateway_headers
from api.deps import ApiKey, GatewayDep, WaiterDep
from api.metrics import SHED, SUBMITTED
from api.responses import OrjsonResponse
from api.routes.common import _BULK, submit_and_wait
from api.service import BatchSubmitted, Gateway
from shared.errors import Overloaded
from shared.schemas import JobBatchRequest, JobRequest

router = APIRouter()


@router.post("/v1/jobs", status_code=202)
async def submit_job(
    body: JobRequest, api_key: ApiKey, gw: GatewayDep, waiter: WaiterDep,
    wait: Annotated[float | None, Query(ge=0, description="seconds to wait for the result")] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> OrjsonResponse:
    tags = body.tags()
    if idempotency_key and not tags.idempotency_key:
        tags.idempotency_key = idempotency_key
    wait_s = min(wait, gw.settings.api.max_sync_wait_s) if wait else None
    submitted, done = await submit_and_wait(gw, waiter, api_key, body.chat(), tags, wait_s)
    view = done or submitted.view
    status = 200 if done else (202 if submitted.created else 200)
    return OrjsonResponse(view, status_code=status, headers=gateway_headers(view))


def _batch_body_schema() -> dict[str, Any]:
    """The documented body; its items refer to the JobRequest schema that POST /v1/jobs publishes."""
    schema = JobBatchRequest.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/v1/jobs/batch", status_code=202, openapi_extra=_batch_body_schema())
async def submit_jobs(request: Request, api_key: ApiKey, gw: GatewayDep) -> OrjsonResponse:
    """Many jobs in one request, all or nothing; each is queued for the scheduler (never admitted inline).

    The body is parsed and validated in the bulk submit thread, with the rest of the work, so a
    large batch never holds the event loop that interactive calls are answered on.
    """
    raw = await request.body()
    batch = await anyio.to_thread.run_sync(_submit_batch, gw, api_key, raw, limiter=_BULK)
    return OrjsonResponse({"object": "list", "data": batch.views}, status_code=202,
                          headers={"x-gateway-jobs-created": str(batch.created)})


def _submit_batch(gw: Gateway, api_key: str, raw: bytes) -> BatchSubmitted:
    items = _parse_batch(raw, gw.settings.api.max_batch_jobs)
    try:
        batch = gw.submit_many(api_key, items)
    except Overloaded as exc:
        SHED.labels(reason=exc.code or "overloaded").inc(len(items))
        raise
    for lane, count in _count_by_lane(batch).items():
        SUBMITTED.labels(lane=lane, admitted_inline="False").inc(count)
    return batch


def _parse_batch(raw: bytes, max_jobs: int) -> list[JobRequest]:
    """The batch's jobs; errors as FastAPI's own body validation reports them (``jobs.<i>.<field>``)."""
    try:
        return JobBatchRequest.model_validate_json(raw, context={"max_jobs": max_jobs}).jobs
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in errors]) from exc


def _count_by_lane(batch: BatchSubmitted) -> dict[str, int]:
    counts: dict[str, int] = {}
    for view in batch.views:
        counts[view["priority"]] = counts.get(view["priority"], 0) + 1
    return counts


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, api_key: ApiKey, gw: GatewayDep) -> OrjsonResponse:
    view = await run_in_threadpool(gw.get, api_key, job_id)
    return OrjsonResponse(view, headers=gateway_headers(view))


@router.get("/v1/jobs")
async def list_jobs(
    api_key: ApiKey, gw: GatewayDep,
    status: str | None = None, feature: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: str | None = None,
) -> OrjsonResponse:
    page = await run_in_threadpool(gw.list, api_key, status=status, feature=feature, limit=limit,
                                   cursor=cursor)
    return OrjsonResponse(page)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, api_key: ApiKey, gw: GatewayDep) -> OrjsonResponse:
    view = await run_in_threadpool(gw.cancel, api_key, job_id)
    return OrjsonResponse(view, headers=gateway_headers(view))
