"""The store's part of the operators' overview: recent jobs across tenants, a job's attempts, cost by
tenant and feature since a moment.

Job ids sort by creation time (``shared.db.ids``), so "since" and "newest first" are ranges and
orderings of the primary key: no extra index, nothing added to the write path.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, defer

from shared.db.ids import first_id_at
from shared.db.jobs import job_view, list_attempts
from shared.db.models import Job


def cost_since(session: Session, since: datetime) -> list[dict[str, Any]]:
    """Per tenant and feature, the jobs created since ``since``: how many, their cost, tokens and cache hits."""
    query = (select(Job.tenant_id, Job.feature, func.count(), func.coalesce(func.sum(Job.cost_usd), 0),
                    func.coalesce(func.sum(Job.tokens_in), 0), func.coalesce(func.sum(Job.tokens_out), 0),
                    func.coalesce(func.sum(case((Job.cache_status == "hit", 1), else_=0)), 0))
             .where(Job.id >= first_id_at(since)).group_by(Job.tenant_id, Job.feature))
    rows = [{"tenant": tenant, "feature": feature, "jobs": int(n), "cost_usd": float(cost), "tokens_in": int(t_in),
             "tokens_out": int(t_out), "cache_hits": int(hits)}
            for tenant, feature, n, cost, t_in, t_out, hits in session.execute(query)]
    return sorted(rows, key=lambda row: (-row["cost_usd"], row["tenant"], row["feature"]))


def recent_jobs(session: Session, *, tenant: str | None = None, feature: str | None = None,
                status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    """The newest jobs of every tenant (or of one), without their requests and results (``result`` is null)."""
    query = select(Job)
    if tenant is not None:
        query = query.where(Job.tenant_id == tenant)
    if feature is not None:
        query = query.where(Job.feature == feature.lower())
    if status is not None:
        query = query.where(Job.status == status)
    query = query.options(defer(Job.request), defer(Job.result)).order_by(Job.id.desc()).limit(limit)
    return [job_view(cast(Job, _WithoutResult(job))) for job in session.scalars(query)]


def job_detail(session: Session, job_id: str) -> dict[str, Any] | None:
    """Any tenant's job as the jobs API shows it, with its attempts; None when there is no such job."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    attempts = [{"number": a.number, "deployment": a.deployment, "status": a.status, "http_status": a.http_status,
                 "error": a.error, "latency_ms": a.latency_ms, "tokens_in": a.tokens_in, "tokens_out": a.tokens_out,
                 "cost_usd": float(a.cost_usd or 0.0), "started_at": _unix(a.started_at),
                 "finished_at": _unix(a.finished_at)} for a in list_attempts(session, job_id)]
    return {**job_view(job), "attempt_list": attempts}


class _WithoutResult:
    """A job as a list shows it: ``result`` null, so neither the request nor the result is loaded."""

    result = None

    def __init__(self, job: Job) -> None:
        self._job = job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)


def _unix(moment: datetime | None) -> float | None:
    return moment.timestamp() if moment else None
