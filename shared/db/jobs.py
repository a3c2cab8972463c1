"""The job repository: every status change of a job is one conditional UPDATE.

A transition only applies when the row is still in an expected status (``WHERE status IN ...``),
so a cancel cannot race an admission, a redelivered task cannot start or finish a job twice, and
the first terminal outcome wins. Functions take the caller's Session and never commit: the
caller's ``session_scope()`` does, so one request's writes land together or not at all.
The two hot paths, a new job (api) and a finished attempt (worker), run prebuilt Core statements
with RETURNING, compiled once and run on the DBAPI cursor (``shared.db.prepared``): one round trip
each, no ORM unit of work, no SAVEPOINT, no read-back.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache, partial
from typing import Any, cast

from sqlalchemy import CursorResult, Row, Table, and_, bindparam, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, make_transient_to_detached

from shared.db import usage as rollups
from shared.db.ids import is_job_id, new_job_id
from shared.db.models import STATUSES, TERMINAL_STATUSES, Attempt, Job, Tenant, utcnow
from shared.db.prepared import Prepared
from shared.db.usage import AttemptUsage
from shared.errors import Conflict, InvalidRequest, NotFound, echo
from shared.lanes import LANE_NAMES

__all__ = [
    "OPEN_STATUSES", "STATUSES", "TERMINAL_STATUSES", "MAX_PAGE_SIZE",
    "NewJob", "create_job", "create_jobs", "fail_jobs", "get_job", "get_job_any", "list_jobs", "cancel_job",
    "mark_admitted", "return_to_queue", "route_view",
    "start_attempt", "finish_attempt", "record_attempt", "list_attempts", "complete_job", "expire_job", "overdue_jobs",
    "job_view",
]

OPEN_STATUSES = ("queued", "admitted", "running")
WAITING_STATUSES = ("queued", "admitted")
MAX_PAGE_SIZE = 1000
IDEMPOTENCY_WINDOW = timedelta(hours=24)  # a repeated key within this window returns the original job


_JOBS, _ATTEMPTS, _TENANTS = (cast(Table, model.__table__) for model in (Job, Attempt, Tenant))
_INSERTS: dict[str, Callable[[Table], Any]] = {"sqlite": sqlite_insert, "postgresql": pg_insert}


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _param(name: str, column: Any) -> Any:
    """A bind parameter typed like ``column``; never named like a column (Core would SET it)."""
    return bindparam(name, type_=column.type)


@lru_cache(maxsize=8)
def _create_statement(dialect: str, with_result: bool = False) -> Any:
    """The new job's row, copied from the tenant's row so a missing tenant inserts nothing.

    ``result`` and ``error`` are left out: they stay SQL NULL until the job ends (a cache hit, which
    is answered at once, writes its ``result``).
    """
    left_out = ("tenant_id", "error") if with_result else ("tenant_id", "result", "error")
    names = tuple(c.name for c in _JOBS.c if c.name not in left_out)
    source = select(_TENANTS.c.id, *(_param(f"n_{name}", _JOBS.c[name]) for name in names)).where(
        _TENANTS.c.id == bindparam("n_tenant_id"))
    return (_INSERTS[dialect](_JOBS).from_select(("tenant_id", *names), source)
            .on_conflict_do_nothing().returning(_JOBS.c.id))


# The hot statements, compiled once per dialect and run on the session's cursor (``shared.db.prepared``).
_CREATE = {(name, answered): Prepared(partial(_create_statement, name, answered))
           for name in _INSERTS for answered in (False, True)}


def _transition(
    session: Session, job_id: str, allowed_from: Iterable[str], *, tenant_id: str | None = None, **values: Any
) -> bool:
    """Apply ``values`` only if the job is in one of ``allowed_from``; True when it did."""
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(tuple(allowed_from)))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if tenant_id is not None:
        stmt = stmt.where(Job.tenant_id == tenant_id)
    return cast(CursorResult[Any], session.execute(stmt)).rowcount == 1


def _by_idempotency_key(session: Session, tenant_id: str, key: str) -> Job | None:
    query = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.scalars(query.execution_options(populate_existing=True)).first()


def _repeat_of(job: Job, request: dict[str, Any]) -> tuple[Job, bool]:
    if job.request != request:
        raise Conflict(
            f"idempotency_key {echo(job.idempotency_key)} was already used for job {job.id} with a different "
            "request; send the same request to get that job back, or use a new key",
            param="idempotency_key",
        )
    return job, False


def _retire_key(session: Session, job_id: str) -> None:
    session.execute(update(Job).where(Job.id == job_id).values(idempotency_key=None)
                    .execution_options(synchronize_session=False))


def _check_choice(value: str, allowed: Iterable[str], param: str) -> None:
    if value not in allowed:
        raise InvalidRequest(f"unknown {param} {echo(value)}; use one of {', '.join(allowed)}", param=param)


@dataclass(frozen=True)
class NewJob:
    """One job of a bulk submit, as ``create_jobs`` inserts it (always queued: the scheduler admits it)."""

    job_id: str
    feature: str
    lane: str
    task: str | None
    model: str
    request: dict[str, Any]
    deadline: datetime
    idempotency_key: str | None
    estimate_tokens: int | None = None
    key_id: int | None = None
    screening: dict[str, Any] | None = None  # what redaction and the injection screen found (``shared.privacy``)
    route: dict[str, Any] | None = None  # model auto: ``RouteSpec.to_dict()``
    cache_status: str = "miss"
    dialect: str = "openai"  # the format ``request`` is written in (``shared.dialects``)
    batch_id: str | None = None  # a line of a batch (``POST /v1/batches``) ...
    custom_id: str | None = None  # ... and that line's custom_id
    stream: dict[str, Any] | None = None  # how it streams to its caller (``JobSpec.stream``): recovery keeps it


def _new_job_values(tenant_id: str, job: NewJob, now: datetime, *,
                    admitted_deployment: str | None = None, cache_status: str = "miss") -> dict[str, Any]:
    """Every column of a new job's row but ``result`` and ``error`` (SQL NULL until it ends);
    ``create_job`` and ``create_jobs`` both build their rows here, so the two stay identical."""
    admitted = admitted_deployment is not None
    return dict(
        id=job.job_id, tenant_id=tenant_id, key_id=job.key_id, feature=job.feature, lane=job.lane, task=job.task,
        model=job.model,
        status="admitted" if admitted else "queued", request=job.request, deadline=job.deadline,
        idempotency_key=job.idempotency_key, estimate_tokens=job.estimate_tokens, deployment=admitted_deployment,
        model_used=None, tokens_in=0, tokens_out=0, cost_usd=0.0, cache_status=cache_status,
        cache_source_job=None, cache_similarity=None, saved_usd=0.0, queued_ms=0 if admitted else None,
        attempts=0, created_at=now, admitted_at=now if admitted else None,
        finished_at=None, updated_at=now, screening=job.screening, route=job.route, escalations=0,
        route_ceiling_usd=None, saving_usd=None, dialect=job.dialect, batch_id=job.batch_id,
        custom_id=job.custom_id, stream=job.stream,
    )


def create_job(session: Session, **fields: Any) -> tuple[Job, bool]:
    """Persist a new queued job, or return the tenant's job with the same idempotency key (``insert_job``).
    The returned Job is attached to the session as if loaded, so a caller may still change it and flush."""
    inserted, created = insert_job(session, **fields)
    if not created:
        return cast(Job, inserted), False
    job = Job(**{name: getattr(inserted, name) for name in _JobRow.__dataclass_fields__})
    make_transient_to_detached(job)  # persistent as if just loaded: no SELECT, later changes flush
    session.add(job)
    return job, True


def create_job_view(session: Session, **fields: Any) -> tuple[dict[str, Any], bool]:
    """``create_job``, as the job's view (what the api answers with), without building an ORM Job."""
    inserted, created = insert_job(session, **fields)
    return job_view(inserted), created


def insert_job(
    session: Session, *, tenant_id: str, feature: str, lane: str, task: str | None, model: str,
    request: dict[str, Any], deadline: datetime, idempotency_key: str | None,
    estimate_tokens: int | None = None, job_id: str | None = None, admitted_deployment: str | None = None,
    key_id: int | None = None, screening: dict[str, Any] | None = None, route: dict[str, Any] | None = None,
    cache_status: str = "miss", answered: dict[str, Any] | None = None, now: datetime | None = None,
    dialect: str = "openai", stream: dict[str, Any] | None = None,
) -> tuple[Job | _JobRow, bool]:
    """Insert a new queued job (its row's values, ``created`` True), or return the tenant's job with the
    same idempotency key (``created`` False).

    One INSERT ... SELECT FROM tenants ... ON CONFLICT DO NOTHING: it writes no row, and raises
    nothing, when the tenant is gone or a concurrent request took the key first; then the winner's
    row comes back. ``admitted_deployment`` (fast lane, admitted before
    the insert under a ``job_id`` chosen up front) writes the job as admitted there at once.
    ``answered`` (a cache hit) writes it finished at once: its status, result and cache fields
    (``answered_view`` shows the same row before it is written).
    """
    _check_choice(lane, LANE_NAMES, "priority")
    key = idempotency_key
    now = now or utcnow()
    if key is not None and (existing := _by_idempotency_key(session, tenant_id, key)):
        if existing.created_at > now - IDEMPOTENCY_WINDOW:
            return _repeat_of(existing, request)
        _retire_key(session, existing.id)  # older than the window: the key is free again
    values = _new_job_values(
        tenant_id, NewJob(job_id or new_job_id(), feature, lane, task, model, request, deadline, key, estimate_tokens,
                          key_id, screening, route, dialect=dialect, stream=stream),
        now, admitted_deployment=admitted_deployment, cache_status=cache_status,
    )
    if answered is not None:
        values.update(answered, finished_at=now, queued_ms=0)
    statement = _CREATE[_dialect(session), answered is not None]
    if statement.run(session, **{f"n_{k}": v for k, v in values.items()}).first() is None:
        if key is not None and (winner := _by_idempotency_key(session, tenant_id, key)):
            return _repeat_of(winner, request)
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    return _JobRow(**{"result": None, **values}, error=None), True


def answered_view(tenant_id: str, job: NewJob, answered: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The view of the row ``create_job(..., answered=answered, now=now)`` writes for ``job``, before it
    is written: a cache hit is answered first and recorded right after."""
    values = _new_job_values(tenant_id, job, now, cache_status=job.cache_status)
    values.update(answered, finished_at=now, queued_ms=0)
    return job_view(_JobRow(**{"result": None, **values}, error=None))


@lru_cache(maxsize=4)
def _bulk_create_statement(dialect: str) -> Any:
    """A plain multi-row INSERT: SQLAlchemy sends an executemany of it as a few multi-VALUES
    statements with RETURNING ("insertmanyvalues"); a row whose key was taken meanwhile is skipped."""
    return _INSERTS[dialect](_JOBS).on_conflict_do_nothing().returning(_JOBS.c.id)


def create_jobs(session: Session, tenant_id: str, rows: Sequence[NewJob]) -> list[tuple[dict[str, Any], bool]]:
    """Persist many queued jobs with one SELECT and one executemany INSERT; (view, created) in ``rows`` order.

    A row whose idempotency key the tenant used within the window gets that job's view back
    (``created`` False), as in ``create_job``; keys older than the window are freed first (one
    UPDATE). A key reused with a different request is a Conflict naming the row as ``jobs.<i>``.
    Keys must be distinct within ``rows`` (the caller refuses duplicates before).
    """
    for row in rows:
        _check_choice(row.lane, LANE_NAMES, "priority")
    now = utcnow()
    used = _keys_in_use(session, tenant_id, [r.idempotency_key for r in rows if r.idempotency_key], now)
    views: list[tuple[dict[str, Any], bool] | None] = [None] * len(rows)
    fresh: list[tuple[int, dict[str, Any]]] = []
    for i, row in enumerate(rows):
        if row.idempotency_key is not None and (existing := used.get(row.idempotency_key)) is not None:
            views[i] = (job_view(_repeat_at(i, existing, row.request)), False)
        else:
            fresh.append((i, _new_job_values(tenant_id, row, now, cache_status=row.cache_status)))
    inserted: set[str] = set()
    if fresh:
        result = session.execute(_bulk_create_statement(_dialect(session)), [values for _, values in fresh])
        inserted = set(result.scalars())
    winners = _winners(session, tenant_id, [v["idempotency_key"] for _, v in fresh if v["id"] not in inserted])
    for i, values in fresh:
        if values["id"] in inserted:
            views[i] = (job_view(_JobRow(**values, result=None, error=None)), True)
        else:  # a concurrent request took the key between the SELECT and the INSERT (PostgreSQL)
            views[i] = (job_view(_repeat_at(i, winners[values["idempotency_key"]], rows[i].request)), False)
    return [v for v in views if v is not None]


def _keys_in_use(session: Session, tenant_id: str, keys: list[str], now: datetime) -> dict[str, Job]:
    """The tenant's jobs holding any of ``keys`` within the window, in one SELECT that also proves
    the tenant exists (NotFound otherwise); keys past the window are freed in one UPDATE."""
    query = (select(_TENANTS.c.id, Job).select_from(_TENANTS)
             .outerjoin(Job, and_(Job.tenant_id == _TENANTS.c.id, Job.idempotency_key.in_(keys)))
             .where(_TENANTS.c.id == tenant_id).execution_options(populate_existing=True))
    found = session.execute(query).all()
    if not found:
        raise NotFound(f"tenant {tenant_id!r} does not exist")
    held = [job for _, job in found if job is not None]
    expired = [job.id for job in held if job.created_at <= now - IDEMPOTENCY_WINDOW]
    if expired:
        session.execute(update(Job).where(Job.id.in_(expired)).values(idempotency_key=None)
                        .execution_options(synchronize_session=False))
    return {job.idempotency_key: job for job in held if job.id not in expired and job.idempotency_key}


def keys_in_use(session: Session, tenant_id: str, keys: list[str]) -> dict[str, Job]:
    """The tenant's jobs holding any of ``keys`` within the window (read only: nothing is freed)."""
    query = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key.in_(keys),
                              Job.created_at > utcnow() - IDEMPOTENCY_WINDOW)
    return {job.idempotency_key: job for job in session.scalars(query.execution_options(populate_existing=True))
            if job.idempotency_key}


def _winners(session: Session, tenant_id: str, keys: list[str]) -> dict[str, Job]:
    """The jobs that took ``keys`` first (only a row with a key can be skipped by the INSERT)."""
    if not keys:
        return {}
    query = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key.in_(keys))
    return {job.idempotency_key: job for job in session.scalars(query.execution_options(populate_existing=True))
            if job.idempotency_key}


def repeat_at(index: int, job: Job, request: dict[str, Any]) -> Job:
    """``job``, when it was made by the same request as item ``index`` of a batch; else a Conflict naming it."""
    return _repeat_at(index, job, request)


def _repeat_at(index: int, job: Job, request: dict[str, Any]) -> Job:
    try:
        return _repeat_of(job, request)[0]
    except Conflict as exc:
        exc.param = f"jobs.{index}.idempotency_key"
        exc.message = f"{exc.param}: {exc.message}"
        exc.args = (exc.message,)
        raise


@dataclass(frozen=True, slots=True)
class _JobRow:
    """What ``job_view`` reads, for a job just inserted in bulk (an ORM Job costs more to build)."""

    id: str
    tenant_id: str
    key_id: int | None
    feature: str
    lane: str
    task: str | None
    model: str
    status: str
    request: dict[str, Any]
    deadline: datetime
    idempotency_key: str | None
    estimate_tokens: int | None
    deployment: str | None
    model_used: str | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    cache_status: str
    cache_source_job: str | None
    cache_similarity: float | None
    saved_usd: float
    queued_ms: int | None
    attempts: int
    created_at: datetime
    admitted_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    route: dict[str, Any] | None
    escalations: int
    route_ceiling_usd: float | None
    saving_usd: float | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    screening: dict[str, Any] | None = None
    dialect: str = "openai"
    batch_id: str | None = None
    custom_id: str | None = None
    stream: dict[str, Any] | None = None


def fail_jobs(session: Session, job_ids: Sequence[str], error: dict[str, Any]) -> int:
    """Fail every listed job still open, in one UPDATE (bulk jobs the queue never received)."""
    if not job_ids:
        return 0
    now = utcnow()
    stmt = (update(Job).where(Job.id.in_(list(job_ids)), Job.status.in_(OPEN_STATUSES))
            .values(status="failed", error=error, finished_at=now, updated_at=now)
            .execution_options(synchronize_session=False))
    return cast(CursorResult[Any], session.execute(stmt)).rowcount


def get_job_any(session: Session, job_id: str) -> Job | None:
    """Any tenant's job (for the worker and scheduler, never for a caller-facing read)."""
    return session.get(Job, job_id, populate_existing=True)


def get_jobs(session: Session, tenant_id: str, job_ids: Sequence[str]) -> list[Job]:
    """The tenant's jobs among ``job_ids`` (others' and unknown ids are simply not there), one query."""
    query = select(Job).where(Job.tenant_id == tenant_id, Job.id.in_(list(job_ids)))
    return list(session.scalars(query.execution_options(populate_existing=True)))


def get_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """The tenant's job; another tenant's job is NotFound too, with the same message."""
    job = get_job_any(session, job_id)
    if job is None or job.tenant_id != tenant_id:
        raise NotFound(f"job {echo(job_id)} not found; check the id returned by POST /v1/jobs", param="job_id")
    return job


def _encode_cursor(job_id: str) -> str:
    return base64.urlsafe_b64encode(job_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        job_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        job_id = ""
    if not is_job_id(job_id):
        raise InvalidRequest("invalid cursor: pass the previous page's next_cursor unchanged", param="cursor")
    return job_id


def list_jobs(
    session: Session, tenant_id: str, *, status: str | None = None, feature: str | None = None,
    limit: int = 50, cursor: str | None = None,
) -> tuple[list[Job], str | None]:
    """One page of the tenant's jobs, newest first, and the cursor of the next page (None at the end)."""
    if status is not None:
        _check_choice(status, STATUSES, "status")
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidRequest(f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}", param="limit")
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if feature is not None:
        query = query.where(Job.feature == feature)
    if cursor is not None:
        query = query.where(Job.id < _decode_cursor(cursor))
    jobs = list(session.scalars(query.order_by(Job.id.desc()).limit(limit + 1)))
    if len(jobs) > limit:
        return jobs[:limit], _encode_cursor(jobs[limit - 1].id)
    return jobs, None


def cancel_job(session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a job that has not been sent yet (status queued); Conflict names the status otherwise."""
    cancelled = _transition(
        session, job_id, ("queued",), tenant_id=tenant_id, status="cancelled", finished_at=utcnow(),
        error={"type": "cancelled", "message": "cancelled by the caller before it was sent"},
    )
    job = get_job(session, tenant_id, job_id)
    if not cancelled:
        raise Conflict(f"job {job_id} is {job.status}; only a queued job can be cancelled", param="job_id")
    return job


def mark_admitted(session: Session, job_id: str, deployment: str, queued_ms: int) -> bool:
    """queued -> admitted; False when the job was cancelled, expired or finished meanwhile."""
    return _transition(
        session, job_id, ("queued",), status="admitted", deployment=deployment, queued_ms=queued_ms,
        admitted_at=utcnow(),
    )


def mark_admitted_many(session: Session, admissions: list[tuple[str, str, int]]) -> set[str]:
    """``mark_admitted`` for a scheduler round in two statements: (job id, deployment, queued ms) each.

    Returns the ids that moved from queued to admitted; the others were cancelled or shed meanwhile.
    Run inside one writing transaction, so nothing changes between the read and the update.
    """
    if not admissions:
        return set()
    still_queued, admit = _admit_statements()
    db = session.connection()  # Core statements, built once: a round of one job is the common case
    queued = set(db.execute(still_queued, {"ids": [job_id for job_id, _, _ in admissions]}).scalars())
    now = utcnow()
    rows = [{"jid": j, "a_deployment": d, "a_queued_ms": q, "a_now": now} for j, d, q in admissions if j in queued]
    if rows:
        db.execute(admit, rows)
    return queued


@lru_cache(maxsize=1)
def _admit_statements() -> tuple[Any, Any]:
    still_queued = select(_JOBS.c.id).where(_JOBS.c.id.in_(bindparam("ids", expanding=True)),
                                             _JOBS.c.status == "queued")
    now = _param("a_now", _JOBS.c.admitted_at)
    admit = update(_JOBS).where(_JOBS.c.id == bindparam("jid")).values(
        status="admitted", deployment=_param("a_deployment", _JOBS.c.deployment),
        queued_ms=_param("a_queued_ms", _JOBS.c.queued_ms), admitted_at=now, updated_at=now)
    return still_queued, admit


def return_to_queue(session: Session, job_id: str) -> bool:
    """admitted|running -> queued, for a retry that must be admitted again (a new reservation)."""
    return _transition(session, job_id, ("admitted", "running"), status="queued")


def start_attempt(session: Session, job_id: str, number: int, deployment: str) -> Attempt | None:
    """Record attempt ``number`` and mark the job running; None for a redelivery or a finished job."""
    started = _transition(
        session, job_id, OPEN_STATUSES, status="running", deployment=deployment,
        attempts=case((Job.attempts < number, number), else_=Job.attempts),
    )
    if not started:
        return None
    attempt = Attempt(job_id=job_id, number=number, deployment=deployment, status="running")
    try:
        with session.begin_nested():
            session.add(attempt)
    except IntegrityError:
        return None
    return attempt


def finish_attempt(
    session: Session, attempt_id: int, *, status: str, http_status: int | None = None,
    error: str | None = None, latency_ms: int, tokens_in: int = 0, tokens_out: int = 0,
    cost_usd: float = 0.0,
) -> bool:
    """Record an attempt's outcome once; a second report for the same attempt changes nothing."""
    stmt = (
        update(Attempt)
        .where(Attempt.id == attempt_id, Attempt.status == "running")
        .values(
            status=status, http_status=http_status, error=error, latency_ms=latency_ms, tokens_in=tokens_in,
            tokens_out=tokens_out, cost_usd=cost_usd, finished_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return cast(CursorResult[Any], session.execute(stmt)).rowcount == 1


def list_attempts(session: Session, job_id: str) -> list[Attempt]:
    query = select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)
    return list(session.scalars(query.execution_options(populate_existing=True)))


def complete_job(
    session: Session, job_id: str, *, status: str, result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None, model_used: str | None = None, deployment: str | None = None,
    tokens_in: int = 0, tokens_out: int = 0, cost_usd: float = 0.0, cache_status: str | None = None,
) -> bool:
    """Give the job its terminal outcome unless it already has one; True when this call set it."""
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"complete_job needs a terminal status, not {status!r}")
    values: dict[str, Any] = dict(
        status=status, result=result, error=error, model_used=model_used, tokens_in=tokens_in,
        tokens_out=tokens_out, cost_usd=cost_usd, finished_at=utcnow(),
        attempts=select(func.count()).where(Attempt.job_id == job_id).scalar_subquery(),
    )
    if deployment is not None:
        values["deployment"] = deployment
    if cache_status is not None:  # else what the job was accepted with (miss or bypass) stands
        values["cache_status"] = cache_status
    return _transition(session, job_id, OPEN_STATUSES, **values)


# Everything job_view reads, so a RETURNING row can be shown without another SELECT.
_VIEW_COLUMNS = tuple(_JOBS.c[name] for name in (
    "id", "status", "tenant_id", "key_id", "feature", "lane", "task", "model", "model_used", "deployment",
    "idempotency_key", "created_at", "admitted_at", "finished_at", "deadline", "queued_ms", "tokens_in",
    "tokens_out", "cost_usd", "cache_status", "cache_source_job", "cache_similarity", "saved_usd", "attempts",
    "result", "error", "route", "escalations", "route_ceiling_usd", "saving_usd",
))


_USAGE_COLUMNS = ("model", "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cache_savings_usd",
                  "routing_savings_usd")


@lru_cache(maxsize=4)
def _record_statements(dialect: str) -> tuple[Any, Any, Any, Any]:
    """The attempt insert and the job updates, built once: no statement building per attempt.

    The insert copies the job's id from its row only while the job is open, and skips an attempt
    number already recorded: zero rows means a redelivery or a finished job, nothing is written.
    """
    insert = _INSERTS[dialect]
    columns = ("number", "deployment", "status", "http_status", "error", "latency_ms", "tokens_in",
               "tokens_out", "cost_usd", "started_at", "finished_at", *_USAGE_COLUMNS, "ended_job")
    is_open = (_JOBS.c.id == bindparam("jid"), _JOBS.c.status.in_(OPEN_STATUSES))
    source = select(_JOBS.c.id, *(_param(f"a_{name}", _ATTEMPTS.c[name]) for name in columns)).where(*is_open)
    add_attempt = (insert(_ATTEMPTS).from_select(("job_id", *columns), source)
                   .on_conflict_do_nothing(index_elements=["job_id", "number"]).returning(_ATTEMPTS.c.id))
    number = _param("a_number", _ATTEMPTS.c.number)
    goes_on = update(_JOBS).where(*is_open).values(  # back to queued: it will be admitted again
        status="queued", deployment=_param("a_deployment", _JOBS.c.deployment),
        attempts=case((_JOBS.c.attempts < number, number), else_=_JOBS.c.attempts),
        escalations=_JOBS.c.escalations + case((_param("a_status", _ATTEMPTS.c.status) == "escalated", 1),
                                               else_=0),
    ).returning(*_VIEW_COLUMNS)
    count = select(func.count()).where(_ATTEMPTS.c.job_id == _JOBS.c.id).scalar_subquery()
    # What the job cost: every attempt's cost (an escalated attempt's answer was paid for too).
    spent = func.coalesce(select(func.sum(_ATTEMPTS.c.cost_usd)).where(_ATTEMPTS.c.job_id == _JOBS.c.id)
                          .scalar_subquery(), 0)
    ceiling = _param("j_route_ceiling_usd", _JOBS.c.route_ceiling_usd)
    ends = update(_JOBS).where(*is_open).values(
        deployment=func.coalesce(_param("j_deployment", _JOBS.c.deployment), _JOBS.c.deployment),
        attempts=count, cost_usd=spent, route_ceiling_usd=ceiling, saving_usd=ceiling - spent,
        **{name: _param(f"j_{name}", _JOBS.c[name]) for name in _OUTCOME_FIELDS if name != "cost_usd"},
    ).returning(*_VIEW_COLUMNS)
    forget = delete(_ATTEMPTS).where(_ATTEMPTS.c.job_id == bindparam("jid"), _ATTEMPTS.c.number == number)
    return add_attempt, goes_on, ends, forget


_RECORD = {name: tuple(Prepared(partial(lambda d, i: _record_statements(d)[i], name, i)) for i in range(4))
           for name in _INSERTS}


def record_attempt(
    session: Session, job_id: str, number: int, *, deployment: str, status: str, latency_ms: int,
    http_status: int | None = None, error: str | None = None, tokens_in: int = 0, tokens_out: int = 0,
    cost_usd: float = 0.0, job_outcome: dict[str, Any] | None = None, usage: AttemptUsage | None = None,
    zone: tzinfo = UTC,
) -> dict[str, Any] | None:
    """Record finished attempt ``number`` and its effect on the job in two statements; the job's view.

    ``job_outcome`` holds the terminal ``status`` and other fields of ``complete_job``; without it
    the job goes on (queued again, to be re-admitted as a retry). None, with nothing written, for a redelivered attempt
    or a job no longer open: the unique (job, number) key and the status guard make it exactly once.
    The attempt is counted in the usage rollups (``shared.db.usage``, days in ``zone``) when the
    transaction commits, in it.
    """
    outcome = None if job_outcome is None else _terminal_values(job_outcome)
    add_attempt, goes_on, ends, forget = _RECORD[_dialect(session)]
    now = utcnow()
    usage = usage or AttemptUsage()
    attempt = {
        "jid": job_id, "a_number": number, "a_deployment": deployment, "a_status": status,
        "a_http_status": http_status, "a_error": error, "a_latency_ms": latency_ms, "a_tokens_in": tokens_in,
        "a_tokens_out": tokens_out, "a_cost_usd": cost_usd, "a_finished_at": now,
        "a_started_at": now - timedelta(milliseconds=latency_ms), "a_ended_job": outcome is not None,
        **{f"a_{name}": getattr(usage, name) for name in _USAGE_COLUMNS},
    }
    if add_attempt.run(session, **attempt).first() is None:
        return None
    if outcome is None:
        row = goes_on.run(session, **attempt).first()
    else:
        row = ends.run(session, jid=job_id, j_finished_at=now, **outcome).first()
    if row is None:  # PostgreSQL only: another transaction finished the job in between
        forget.run(session, **attempt)
        return None
    rollups.add(session, rollups.RecordedAttempt(
        row.tenant_id, row.feature, row.key_id, deployment, now, status, outcome is not None, tokens_in,
        tokens_out, cost_usd, usage), zone)
    return job_view(row)


# An attempt's outcome leaves the cache fields as the job was accepted with them (miss or bypass).
_OUTCOME_FIELDS = ("status", "result", "error", "model_used", "tokens_in", "tokens_out", "cost_usd", "finished_at")
_OUTCOME_DEFAULTS: dict[str, Any] = {
    "result": None, "error": None, "model_used": None, "tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0,
    "deployment": None, "route_ceiling_usd": None,
}


def _terminal_values(job_outcome: dict[str, Any]) -> dict[str, Any]:
    """``complete_job``'s keyword arguments as the bind parameters of the terminal update."""
    if job_outcome.get("status") not in TERMINAL_STATUSES:
        raise ValueError(f"a job outcome needs a terminal status, not {job_outcome.get('status')!r}")
    unknown = set(job_outcome) - set(_OUTCOME_DEFAULTS) - {"status"}
    if unknown:
        raise TypeError(f"unknown job outcome fields: {', '.join(sorted(unknown))}")
    return {f"j_{name}": value for name, value in {**_OUTCOME_DEFAULTS, **job_outcome}.items()}


def expire_job(session: Session, job_id: str, reason: str) -> bool:
    """Shed a job still waiting (queued or admitted) when its deadline passed."""
    return _transition(
        session, job_id, WAITING_STATUSES, status="expired", finished_at=utcnow(),
        error={"type": "deadline_exceeded", "message": reason},
    )


def overdue_jobs(session: Session, now: datetime | None = None, limit: int = 100) -> list[str]:
    """Ids of waiting jobs whose deadline has passed, oldest deadline first."""
    query = (
        select(Job.id)
        .where(Job.status.in_(WAITING_STATUSES), Job.deadline < (now or utcnow()))
        .order_by(Job.deadline)
        .limit(limit)
    )
    return list(session.scalars(query))


def _unix(moment: datetime | None) -> int | None:
    return int(moment.timestamp()) if moment else None


def job_view(job: Job | Row[Any] | _JobRow) -> dict[str, Any]:
    """The public JSON of a job, as the native jobs API returns it."""
    return {
        "id": job.id,
        "object": "gateway.job",
        "status": job.status,
        "tenant": job.tenant_id,
        "feature": job.feature,
        "priority": job.lane,
        "task": job.task,
        "model": job.model,
        "model_used": job.model_used,
        "deployment": job.deployment,
        "idempotency_key": job.idempotency_key,
        "created_at": _unix(job.created_at),
        "admitted_at": _unix(job.admitted_at),
        "finished_at": _unix(job.finished_at),
        "deadline": _unix(job.deadline),
        "queued_ms": job.queued_ms,
        "usage": {
            "prompt_tokens": job.tokens_in,
            "completion_tokens": job.tokens_out,
            "total_tokens": job.tokens_in + job.tokens_out,
        },
        "cost_usd": float(job.cost_usd or 0.0),
        "cache_status": job.cache_status,
        "cache_source_job": job.cache_source_job,
        "cache_similarity": job.cache_similarity,
        "saved_usd": float(job.saved_usd or 0.0),
        "attempts": job.attempts,
        "result": job.result,
        "error": job.error,
        "route": route_view(job),
    }


def route_view(job: Job | Row[Any] | _JobRow) -> dict[str, Any] | None:
    """How a routed job (``model: auto``) was routed, and what routing saved; None for a named model.

    ``tier`` is the tier of the deployment that answered (the starting tier before one did)."""
    route = job.route
    if not route:
        return None
    names = [name for name, _ in route["tiers"]]
    answered = next((name for name, deps in route["tiers"] if job.deployment in deps), None)
    ceiling, saving = job.route_ceiling_usd, job.saving_usd
    return {"task": route.get("task"), "tier": answered or names[0], "start_tier": names[0], "tiers": names,
            "reason": route["reason"], "escalations": job.escalations or 0,
            "ceiling_deployment": route["ceiling"],
            "ceiling_cost_usd": float(ceiling) if ceiling is not None else None,
            "saving_usd": float(saving) if saving is not None else None}
