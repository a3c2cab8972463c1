"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from api.answers import Health, Readiness
from api.deps import GatewayDep, MetricsReaderDep
from api.metrics import BudgetCollector
from api.openapi import OPERATORS_KEY, answer, errors
from api.responses import OrjsonResponse
from shared.db.session import session_scope

router = APIRouter()


@router.get("/healthz", response_model=None, responses={200: answer(Health, "The api process is up")})
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={200: answer(Readiness, "Redis and the store answer"),
                                   503: answer(Readiness, "Redis or the store does not answer; `checks` says which")})
async def readyz(gw: GatewayDep) -> OrjsonResponse:
    checks = await run_in_threadpool(_checks, gw)
    ok = all(v == "ok" for v in checks.values())
    return OrjsonResponse({"status": "ok" if ok else "unavailable", "checks": checks},
                          status_code=200 if ok else 503)


def _checks(gw: object) -> dict[str, str]:
    checks = {}
    try:
        gw.redis.ping()  # type: ignore[attr-defined]
        checks["redis"] = "ok"
    except Exception as exc:  # any failure means not ready; say which
        checks["redis"] = f"error: {exc}"
    try:
        with session_scope(readonly=True) as db:
            db.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
    return checks


@router.get("/metrics", response_class=Response, responses={
    200: {"content": {"text/plain": {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format (`text/plain; version=1.0.0`)"},
    **errors(*OPERATORS_KEY)})
async def metrics(reader: MetricsReaderDep, gw: GatewayDep) -> Response:
    """This process's metrics, or, under ``gateway api --workers N`` (``PROMETHEUS_MULTIPROC_DIR`` set),
    every api process's counters summed: a scrape lands on one process at random. They name every
    tenant, feature and their spend, so the operators' key is required unless ``api.metrics_public``
    (Prometheus sends it with ``authorization: {credentials_file: ...}``)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(BudgetCollector(gw))  # read from Redis: the same in every process
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
