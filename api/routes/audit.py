"""The audit log, read: the operators' key reads every tenant's (``/v1/admin/audit``), a tenant's key only
its own (``/v1/audit``; the tenant comes from the key). Oldest first, by pages (``cursor``), or all of it
as JSON lines (``format=jsonl``) for export."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api.answers import AuditPage
from api.deps import AdminDep, CallerDep, GatewayDep
from api.gateway import Gateway
from api.openapi import OPERATORS_KEY, TENANT_KEY, answer, errors
from api.responses import OrjsonResponse
from shared.db import audit
from shared.db.session import session_scope

router = APIRouter()
PAGE = 1000

Since = Annotated[datetime | None, Query(alias="from", description="records at or after this time (ISO 8601)")]
Until = Annotated[datetime | None, Query(alias="to", description="records before this time (ISO 8601)")]
Cursor = Annotated[str | None, Query(pattern=r"^\d{1,18}$", description="the previous page's next_cursor")]
Limit = Annotated[int, Query(ge=1, le=PAGE)]
Format = Annotated[Literal["json", "jsonl"], Query(description="jsonl: every matching record, one JSON per line")]
Feature = Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
_JSONL = {"application/x-ndjson": {"schema": {"$ref": "#/components/schemas/AuditRecord"}}}


@router.get("/v1/admin/audit", response_model=None, responses={
    200: answer(AuditPage, "Audit records of every tenant, or of `tenant`", content=_JSONL),
    **errors(400, *OPERATORS_KEY)})
async def admin_audit(admin: AdminDep, gw: GatewayDep,
                      tenant: Annotated[str | None, Query(max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$")] = None,
                      feature: Feature = None, since: Since = None, until: Until = None, cursor: Cursor = None,
                      limit: Limit = 100, format: Format = "json") -> object:
    return await _answer(gw, tenant, feature, since, until, cursor, limit, format)


@router.get("/v1/audit", response_model=None, responses={
    200: answer(AuditPage, "The calling key's tenant's audit records", content=_JSONL),
    **errors(400, *TENANT_KEY)})
async def tenant_audit(caller: CallerDep, gw: GatewayDep, feature: Feature = None, since: Since = None,
                       until: Until = None, cursor: Cursor = None, limit: Limit = 100,
                       format: Format = "json") -> object:
    return await _answer(gw, caller.tenant, feature, since, until, cursor, limit, format)


async def _answer(gw: Gateway, tenant: str | None, feature: str | None, since: datetime | None,
                  until: datetime | None, cursor: str | None, limit: int, format: str) -> object:
    where: dict[str, Any] = {"tenant": tenant, "feature": feature, "since": since, "until": until}
    if format == "jsonl":
        return StreamingResponse(_lines(gw, where, int(cursor or 0)), media_type="application/x-ndjson")
    page = await run_in_threadpool(_page, gw, where, int(cursor or 0), limit)
    more = len(page) == limit
    return OrjsonResponse({"object": "list", "data": page,
                           "next_cursor": str(page[-1]["id"]) if more and page else None})


def _page(gw: Gateway, where: dict[str, Any], after_id: int, limit: int) -> list[dict[str, Any]]:
    with session_scope(gw.engine, readonly=True) as db:
        return audit.query(db, after_id=after_id, limit=limit, **where)


def _lines(gw: Gateway, where: dict[str, Any], after_id: int) -> Iterator[bytes]:
    """Every matching record, a page at a time (starlette runs a sync iterator on a thread)."""
    while True:
        page = _page(gw, where, after_id, PAGE)
        for record in page:
            yield orjson.dumps(record) + b"\n"
        if len(page) < PAGE:
            return
        after_id = page[-1]["id"]
