"""Retention: finished jobs lose their content after ``retention.job_content_days``, their rows after
``retention.jobs_days``; usage rollups go after ``retention.usage_days``.

Why: a job's ``request`` and ``result`` are a tenant's prompts and answers, and nothing else ever
deletes them. Purging the content sets both to NULL and keeps the row's billing fields (ids,
tenant, feature, model, tokens, cost); deleting a row takes its attempts with it (FK cascade). Only
jobs in a terminal status are touched, counted from when they finished.

The leading scheduler calls ``purge`` from its sweep. One call does at most one batch of each kind:
the ids are read in a read-only transaction (no write lock on SQLite), then one UPDATE or DELETE by
id re-checks status and age, so SQLite's single writer is held for one short statement at a time.
``Purged.more`` says a batch was full and the caller should come back soon for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, Engine, delete, null, select, update

from shared.config import RetentionConfig
from shared.db import usage
from shared.db.ids import first_id_at
from shared.db.jobs import OPEN_STATUSES
from shared.db.models import Job, utcnow
from shared.db.session import session_scope

BATCH_ROWS = 1000
# "Terminal" written as "not open": SQLite's planner (no ANALYZE statistics) would otherwise take
# ix_jobs_status_deadline for ``status IN (...)`` and walk every finished job instead of the ids.
_FINISHED = Job.status.not_in(OPEN_STATUSES)


@dataclass(frozen=True)
class Purged:
    """What one ``purge`` call did; ``more`` when a batch was full and more rows are due."""

    blanked: int = 0
    deleted: int = 0
    more: bool = False
    rollups: int = 0


def purge(retention: RetentionConfig, *, engine: Engine | None = None, now: datetime | None = None,
          batch: int = BATCH_ROWS) -> Purged:
    """Drop the content of one batch of jobs finished before the content cutoff, then delete one batch
    of rows finished before the row cutoff (each step only when its setting is not null)."""
    now = now or utcnow()
    blanked = deleted = 0
    if retention.job_content_days is not None:
        blanked = _blank_content(engine, now - timedelta(days=retention.job_content_days), batch)
    if retention.jobs_days is not None:
        deleted = _delete_rows(engine, now - timedelta(days=retention.jobs_days), batch)
    rollups = 0
    if retention.usage_days is not None:  # a minute's worth of buckets at a time: one short DELETE
        with session_scope(engine) as db:
            rollups = usage.purge(db, now - timedelta(days=retention.usage_days))
    return Purged(blanked, deleted, more=blanked == batch or deleted == batch, rollups=rollups)


def _blank_content(engine: Engine | None, cutoff: datetime, batch: int) -> int:
    """Oldest first, through the partial index of finished jobs that still hold content."""
    due = (_FINISHED, Job.finished_at < cutoff, Job.request.is_not(None))
    with session_scope(engine, readonly=True) as db:
        ids = list(db.scalars(select(Job.id).where(*due).order_by(Job.finished_at).limit(batch)))
    if not ids:
        return 0
    with session_scope(engine) as db:
        result = db.execute(update(Job).where(Job.id.in_(ids), *due).values(request=null(), result=null())
                            .execution_options(synchronize_session=False))
        return cast(CursorResult[Any], result).rowcount


def _delete_rows(engine: Engine | None, cutoff: datetime, batch: int) -> int:
    """Oldest ids first: a job created after the cutoff cannot have finished before it, so the scan
    walks the primary key from its start and stops at the first id created at the cutoff."""
    due = (_FINISHED, Job.finished_at < cutoff)
    with session_scope(engine, readonly=True) as db:
        query = select(Job.id).where(Job.id < first_id_at(cutoff), *due).order_by(Job.id).limit(batch)
        ids = list(db.scalars(query))
    if not ids:
        return 0
    with session_scope(engine) as db:
        result = db.execute(delete(Job).where(Job.id.in_(ids), *due).execution_options(synchronize_session=False))
        return cast(CursorResult[Any], result).rowcount
