"""Operators' views: live budgets, queues and breakers; the overview the console shows; any tenant's jobs;
the cache purge; and the management of tenants and keys (``shared.management``), every change audited
(``/v1/admin/actions``).

Guarded by the operators' key (``GATEWAY_ADMIN_KEY`` by default) or the console's session with its
CSRF token, never a tenant key: these numbers and settings span every tenant.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Header, Path, Query, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from api.answers import (
    AdminActionList,
    AdminJob,
    AdminJobList,
    Budgets,
    CachePurged,
    JobStatus,
    KeyCreated,
    KeyList,
    KeyView,
    Overview,
    TenantList,
    TenantView,
)
from api.deps import AdminDep, GatewayDep, read_body
from api.gateway import Gateway
from api.openapi import BODY, OPERATORS_KEY, answer, body_of, errors
from api.overview import budget_snapshot, overview
from api.responses import OrjsonResponse
from shared import management
from shared.db import overview as store_overview
from shared.db.ids import is_job_id
from shared.db.session import session_scope
from shared.db.tenants import TENANT_ID_PATTERN
from shared.errors import NotFound, clip, echo
from shared.management import Actor, KeyCreate, KeySettings, TenantCreate, TenantUpdate

router = APIRouter()
T = TypeVar("T")

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


# -- tenants and keys (shared.management; every change audited, every process told) ----------------

TenantPath = Annotated[str, Path(pattern=TENANT_ID_PATTERN.pattern, description="the tenant's id (a slug)")]
KeyPath = Annotated[str, Path(pattern=r"^key_[0-9a-f]{16}$", description="the key's public id, key_...")]
OperatorHeader = Annotated[str | None, Header(alias="x-gateway-operator", max_length=100,
                                              description="who makes the change, for the audit trail")]
_TENANT_FOUND = (400, 404)


def _actor(request: Request, operator: str | None) -> Actor:
    """Who: the operator's own name when the header gives one (the operators' key is shared)."""
    name = "".join(ch for ch in (operator or "") if ch.isprintable()).strip()
    return Actor(clip(name, 100) if name else "operators' key", f"api {request.client.host if request.client else '?'}")


def _changing(gw: Gateway, change: Callable[[Session], T]) -> T:
    """One transaction on the store; ``change`` records its own audit row and replaces the epoch."""
    with session_scope(gw.engine) as db:
        return change(db)


def _reading(gw: Gateway, read: Callable[[Session], T]) -> T:
    with session_scope(gw.engine, readonly=True) as db:
        return read(db)


@router.get("/v1/admin/tenants", response_model=None,
            responses={200: answer(TenantList, "Every tenant, with its settings in force"), **errors(*OPERATORS_KEY)})
async def list_tenants(admin: AdminDep, gw: GatewayDep) -> dict[str, Any]:
    data = await run_in_threadpool(_reading, gw, lambda db: management.list_tenants(db, gw.directory.file_tenant))
    return {"object": "list", "data": data}


@router.post("/v1/admin/tenants", status_code=201, response_model=None, openapi_extra=body_of(TenantCreate),
             responses={201: answer(TenantView, "The tenant, created"), **errors(*BODY, 409, *OPERATORS_KEY)})
async def create_tenant(request: Request, admin: AdminDep, gw: GatewayDep,
                        operator: OperatorHeader = None) -> OrjsonResponse:
    body = await read_body(request, TenantCreate)
    actor = _actor(request, operator)
    view = await run_in_threadpool(_changing, gw, lambda db: management.create_tenant(
        db, gw.directory.file_tenant, gw.epoch, actor, body))
    return OrjsonResponse(view, status_code=201)


@router.get("/v1/admin/tenants/{tenant_id}", response_model=None,
            responses={200: answer(TenantView, "The tenant"), **errors(*_TENANT_FOUND, *OPERATORS_KEY)})
async def get_tenant(tenant_id: TenantPath, admin: AdminDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(_reading, gw, lambda db: management.get_tenant(
        db, gw.directory.file_tenant, tenant_id))


@router.patch("/v1/admin/tenants/{tenant_id}", response_model=None, openapi_extra=body_of(TenantUpdate),
              responses={200: answer(TenantView, "The tenant, changed"), **errors(*BODY, 404, *OPERATORS_KEY)})
async def update_tenant(request: Request, tenant_id: TenantPath, admin: AdminDep, gw: GatewayDep,
                        operator: OperatorHeader = None) -> dict[str, Any]:
    body = await read_body(request, TenantUpdate)
    actor = _actor(request, operator)
    return await run_in_threadpool(_changing, gw, lambda db: management.update_tenant(
        db, gw.directory.file_tenant, gw.epoch, actor, tenant_id, body))


@router.post("/v1/admin/tenants/{tenant_id}/disable", response_model=None, responses={
    200: answer(TenantView, "The tenant, disabled: its keys fail at once, its queued jobs are cancelled"),
    **errors(*_TENANT_FOUND, *OPERATORS_KEY)})
async def disable_tenant(request: Request, tenant_id: TenantPath, admin: AdminDep, gw: GatewayDep,
                         operator: OperatorHeader = None) -> dict[str, Any]:
    actor = _actor(request, operator)
    return await run_in_threadpool(_changing, gw, lambda db: management.set_tenant_disabled(
        db, gw.directory.file_tenant, gw.epoch, actor, tenant_id, True))


@router.post("/v1/admin/tenants/{tenant_id}/enable", response_model=None, responses={
    200: answer(TenantView, "The tenant, enabled again"), **errors(*_TENANT_FOUND, *OPERATORS_KEY)})
async def enable_tenant(request: Request, tenant_id: TenantPath, admin: AdminDep, gw: GatewayDep,
                        operator: OperatorHeader = None) -> dict[str, Any]:
    actor = _actor(request, operator)
    return await run_in_threadpool(_changing, gw, lambda db: management.set_tenant_disabled(
        db, gw.directory.file_tenant, gw.epoch, actor, tenant_id, False))


@router.get("/v1/admin/keys", response_model=None, responses={
    200: answer(KeyList, "Keys (never their secrets)"), **errors(*_TENANT_FOUND, *OPERATORS_KEY)})
async def list_keys(admin: AdminDep, gw: GatewayDep, tenant: Annotated[str | None, Query(
        pattern=TENANT_ID_PATTERN.pattern, description="only this tenant's keys")] = None) -> dict[str, Any]:
    data = await run_in_threadpool(_reading, gw, lambda db: management.list_keys(db, tenant))
    return {"object": "list", "data": data}


@router.post("/v1/admin/keys", status_code=201, response_model=None, openapi_extra=body_of(KeyCreate),
             responses={201: answer(KeyCreated, "The key and its secret, shown this once"),
                        **errors(*BODY, 404, *OPERATORS_KEY)})
async def create_key(request: Request, admin: AdminDep, gw: GatewayDep,
                     operator: OperatorHeader = None) -> OrjsonResponse:
    body = await read_body(request, KeyCreate)
    actor = _actor(request, operator)
    view, secret = await run_in_threadpool(_changing, gw, lambda db: management.create_key(
        db, gw.settings, gw.epoch, actor, body))
    return OrjsonResponse({**view, "key": secret}, status_code=201)


@router.get("/v1/admin/keys/{key_id}", response_model=None,
            responses={200: answer(KeyView, "The key (never its secret)"), **errors(400, 404, *OPERATORS_KEY)})
async def get_key(key_id: KeyPath, admin: AdminDep, gw: GatewayDep) -> dict[str, Any]:
    return await run_in_threadpool(_reading, gw, lambda db: management.get_key(db, key_id))


@router.patch("/v1/admin/keys/{key_id}", response_model=None, openapi_extra=body_of(KeySettings),
              responses={200: answer(KeyView, "The key, changed"), **errors(*BODY, 404, *OPERATORS_KEY)})
async def update_key(request: Request, key_id: KeyPath, admin: AdminDep, gw: GatewayDep,
                     operator: OperatorHeader = None) -> dict[str, Any]:
    body = await read_body(request, KeySettings)
    actor = _actor(request, operator)
    return await run_in_threadpool(_changing, gw, lambda db: management.update_key(
        db, gw.settings, gw.epoch, actor, key_id, body))


@router.post("/v1/admin/keys/{key_id}/rotate", response_model=None, responses={
    200: answer(KeyCreated, "The key with a new secret, shown this once; the old secret fails from now on"),
    **errors(400, 404, 409, *OPERATORS_KEY)})
async def rotate_key(request: Request, key_id: KeyPath, admin: AdminDep, gw: GatewayDep,
                     operator: OperatorHeader = None) -> dict[str, Any]:
    actor = _actor(request, operator)
    view, secret = await run_in_threadpool(_changing, gw, lambda db: management.rotate_key(
        db, gw.epoch, actor, key_id))
    return {**view, "key": secret}


@router.post("/v1/admin/keys/{key_id}/revoke", response_model=None, responses={
    200: answer(KeyView, "The key, revoked: it fails from now on, its queued jobs are cancelled"),
    **errors(400, 404, *OPERATORS_KEY)})
async def revoke_key(request: Request, key_id: KeyPath, admin: AdminDep, gw: GatewayDep,
                     operator: OperatorHeader = None) -> dict[str, Any]:
    actor = _actor(request, operator)
    return await run_in_threadpool(_changing, gw, lambda db: management.revoke_key(db, gw.epoch, actor, key_id))


@router.get("/v1/admin/actions", response_model=None, responses={
    200: answer(AdminActionList, "What the operators changed, newest first"), **errors(400, *OPERATORS_KEY)})
async def list_actions(
    admin: AdminDep, gw: GatewayDep,
    target: Annotated[str | None, Query(max_length=100, description="tenant:<id> or key:<id>")] = None,
    limit: Annotated[int, Query(ge=1, le=management.MAX_LIST)] = 100,
) -> dict[str, Any]:
    data = await run_in_threadpool(_reading, gw, lambda db: management.list_actions(db, target=target, limit=limit))
    return {"object": "list", "data": data}
