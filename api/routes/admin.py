"""Operators' views: live budgets, queues and breakers; the overview the console shows; any tenant's jobs;
the cache purge.

Guarded by the operators' key (``GATEWAY_ADMIN_KEY`` by default) or the console's session with its
CSRF token, never a tenant key: these numbers span every tenant.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from api.answers import AdminJob, AdminJobList, Budgets, CachePurged, JobStatus, Overview
from api.deps import AdminDep, GatewayDep
from api.gateway import Gateway
from api.openapi import OPERATORS_KEY, answer, errors
from api.overview import budget_snapshot, overview
from api.responses import OrjsonResponse
from shared.db import overview as store_overview
from shared.db.ids import is_job_id
from shared.db.session import session_scope
from shared.db.tenants import TENANT_ID_PATTERN
from shared.errors import NotFound, echo

router = APIRouter()

TenantFilter = Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$",
                                           description="only this tenant's jobs")]
FeatureFilter = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                            description="only this feature's jobs (case-insensitive)")]


@router.get("/v1/admin/budgets", response_model=None,
            responses={200: answer(Budgets, "Live budgets, queues and breakers"), **errors(*OPERATORS_KEY)})
async def budgets(admin: AdminDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(budget_snapshot, gw)


@router.get("/v1/admin/overview", responses={
    200: answer(Overview, "Queues with their oldest job's age, budgets, breakers, processes, failures per minute, "
                          "today's cost"), **errors(*OPERATORS_KEY)})
async def admin_overview(admin: AdminDep, gw: GatewayDep) -> OrjsonResponse:
    return OrjsonResponse(await run_in_threadpool(overview, gw))


@router.get("/v1/admin/jobs", responses={200: answer(AdminJobList, "The newest jobs of every tenant"),
                                          **errors(*OPERATORS_KEY, 400)})
async def admin_jobs(admin: AdminDep, gw: GatewayDep, tenant: TenantFilter = None, feature: FeatureFilter = None,
                     status: JobStatus | None = None,
                     limit: Annotated[int, Query(ge=1, le=200)] = 50) -> OrjsonResponse:
    rows = await run_in_threadpool(_recent_jobs, gw, tenant, feature, status, limit)
    return OrjsonResponse({"object": "list", "data": rows})


@router.get("/v1/admin/jobs/{job_id}", responses={200: answer(AdminJob, "Any tenant's job, with its attempts"),
                                                   **errors(*OPERATORS_KEY, 404)})
async def admin_job(admin: AdminDep, gw: GatewayDep, job_id: str) -> OrjsonResponse:
    return OrjsonResponse(await run_in_threadpool(_job_detail, gw, job_id))


def _recent_jobs(gw: Gateway, tenant: str | None, feature: str | None, status: str | None,
                 limit: int) -> list[dict[str, Any]]:
    with session_scope(gw.engine, readonly=True) as db:
        return store_overview.recent_jobs(db, tenant=tenant, feature=feature, status=status, limit=limit)


def _job_detail(gw: Gateway, job_id: str) -> dict[str, Any]:
    found = None
    if is_job_id(job_id):  # anything else names no job (and never reaches the store)
        with session_scope(gw.engine, readonly=True) as db:
            found = store_overview.job_detail(db, job_id)
    if found is None:
        raise NotFound(f"job {echo(job_id)} not found", param="job_id")
    return found


@router.delete("/v1/admin/cache", response_model=None,
               responses={200: answer(CachePurged, "What was deleted"), **errors(*OPERATORS_KEY, 400)})
async def purge_cache(
    admin: AdminDep, gw: GatewayDep,
    tenant: Annotated[str, Query(description="the tenant whose entries go", min_length=1, max_length=63,
                                 pattern=TENANT_ID_PATTERN.pattern)],
    feature: Annotated[str | None, Query(description="only the entries this feature of the tenant stored",
                                         min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")] = None,
) -> dict[str, Any]:
    """Delete a tenant's cached answers (exact and semantic), or one feature's: every api replica stops
    serving them at once (the entries are in Redis, which they share)."""
    feature = feature.lower() if feature else None
    purged = await run_in_threadpool(gw.attempts.cache.purge, tenant, feature)
    return {"tenant": tenant, "feature": feature, **purged}
