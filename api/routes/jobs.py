"""The native jobs API: submit (async, or wait up to N seconds), fetch, list, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import ORJSONResponse
from starlette.concurrency import run_in_threadpool

from api.delivery import gateway_headers
from api.deps import ApiKey, GatewayDep, WaiterDep
from api.routes.common import submit_and_wait
from shared.schemas import JobRequest

router = APIRouter()


@router.post("/v1/jobs", status_code=202)
async def submit_job(
    body: JobRequest, api_key: ApiKey, gw: GatewayDep, waiter: WaiterDep,
    wait: Annotated[float | None, Query(ge=0, description="seconds to wait for the result")] = None,
    idempotency_key: Annotated[str | None, Header()] = None,
) -> ORJSONResponse:
    tags = body.tags()
    if idempotency_key and not tags.idempotency_key:
        tags.idempotency_key = idempotency_key
    wait_s = min(wait, gw.settings.api.max_sync_wait_s) if wait else None
    submitted, done = await submit_and_wait(gw, waiter, api_key, body.chat(), tags, wait_s)
    view = done or submitted.view
    status = 200 if done else (202 if submitted.created else 200)
    return ORJSONResponse(view, status_code=status, headers=gateway_headers(view))


@router.get("/v1/jobs/{job_id}")
async def get_job(job_id: str, api_key: ApiKey, gw: GatewayDep) -> ORJSONResponse:
    view = await run_in_threadpool(gw.get, api_key, job_id)
    return ORJSONResponse(view, headers=gateway_headers(view))


@router.get("/v1/jobs")
async def list_jobs(
    api_key: ApiKey, gw: GatewayDep,
    status: str | None = None, feature: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, cursor: str | None = None,
) -> ORJSONResponse:
    page = await run_in_threadpool(gw.list, api_key, status=status, feature=feature, limit=limit,
                                   cursor=cursor)
    return ORJSONResponse(page)


@router.delete("/v1/jobs/{job_id}")
async def cancel_job(job_id: str, api_key: ApiKey, gw: GatewayDep) -> ORJSONResponse:
    view = await run_in_threadpool(gw.cancel, api_key, job_id)
    return ORJSONResponse(view, headers=gateway_headers(view))
