"""What the calls cost: usage and cost by tenant, feature, model, deployment and key, per hour or day.

A tenant's key sees its own tenant; the operators' key sees every tenant (or one, with ``tenant``). The
answer is read from the usage rollups (``shared.db.usage``), never from the attempts, and is JSON, or CSV
for finance (``Accept: text/csv`` or ``format=csv``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from api.answers import UsageReport
from api.auth import Caller
from api.deps import GatewayDep, UsageReaderDep
from api.gateway import Gateway
from api.openapi import TENANT_KEY, answer, errors
from api.responses import OrjsonResponse
from shared import usage_report
from shared.db.models import utcnow
from shared.db.session import session_scope
from shared.db.usage import GROUPS, UsageQuery
from shared.errors import InvalidRequest, PermissionDenied, echo

router = APIRouter()
CSV = "text/csv"
_TIME = "an ISO 8601 time (2026-12-01T09:00:00Z) or a date (2026-12-01); without an offset, in billing.timezone"


@router.get("/v1/usage", response_model=None, responses={
    200: answer(UsageReport, "Usage and cost per bucket and group, and the window's totals",
                content={CSV: {"schema": {"type": "string", "description": "the rows as CSV, a header line first"}}}),
    **errors(400, *TENANT_KEY)})
async def get_usage(
    request: Request, reader: UsageReaderDep, gw: GatewayDep,
    start: Annotated[str | None, Query(alias="from", description=f"the window's start: {_TIME}; default: 7 days "
                                       "(24 hours for hourly buckets) before `to`")] = None,
    end: Annotated[str | None, Query(alias="to", description=f"the window's end: {_TIME}; default: now")] = None,
    group_by: Annotated[str | None, Query(description=f"comma-separated: {', '.join(GROUPS)}")] = None,
    granularity: Annotated[str | None, Query(description="bucket size (default day)",
                                             json_schema_extra={"enum": ["hour", "day"]})] = None,
    format: Annotated[str | None, Query(description="json (default) or csv (or send `Accept: text/csv`)",
                                        json_schema_extra={"enum": ["json", "csv"]})] = None,
    tenant: Annotated[str | None, Query(description="one tenant's usage (operators' key; a tenant's key sees "
                                        "only its own)", max_length=63)] = None,
) -> Response:
    as_csv = _wants_csv(format, request.headers.get("accept", ""))
    query = _query(gw, reader, start, end, group_by, granularity, tenant)
    report = await run_in_threadpool(_build, gw, query)
    if as_csv:
        name = f"usage-{query.start:%Y%m%dT%H%M}-{query.end:%Y%m%dT%H%M}.csv"
        return Response(usage_report.to_csv(report), media_type=f"{CSV}; charset=utf-8",
                        headers={"content-disposition": f'attachment; filename="{name}"'})
    return OrjsonResponse(report)


def _wants_csv(format: str | None, accept: str) -> bool:
    if format not in (None, "json", "csv"):
        raise InvalidRequest(f"format is json or csv, not {echo(format)}", param="format")
    return format == "csv" or (format is None and CSV in accept.lower())


def _query(gw: Gateway, reader: Caller, start: str | None, end: str | None, group_by: str | None,
           granularity: str | None, tenant: str | None) -> UsageQuery:
    """The question, every parameter checked (``shared.usage_report``); a tenant's key is held to its tenant."""
    zone = gw.settings.billing.zone
    if not reader.admin and tenant is not None and tenant != reader.tenant:
        raise PermissionDenied("A tenant's key sees only its own tenant's usage; leave out tenant or use the "
                               "operators' key.", param="tenant")
    size = usage_report.parse_granularity(granularity)
    groups = usage_report.parse_groups(group_by)
    first = usage_report.parse_time(start, zone, "from") if start is not None else None
    last = usage_report.parse_time(end, zone, "to") if end is not None else None
    window = usage_report.window(gw.settings, size, first, last, utcnow())
    whose = tenant if reader.admin else reader.tenant
    return UsageQuery(window.start, window.end, size, groups, whose)


def _build(gw: Gateway, query: UsageQuery) -> dict[str, Any]:
    with session_scope(gw.engine, readonly=True) as db:
        return usage_report.build(db, gw.settings, query)

