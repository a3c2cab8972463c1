"""Retention on SQLite and PostgreSQL: old finished jobs lose their content, then optionally their rows;
recent jobs and jobs still open are never touched."""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, update

from shared.config import RetentionConfig
from shared.db import jobs, retention
from shared.db.ids import first_id_at
from shared.db.models import Attempt, Job, utcnow
from tests.store.conftest import Scope, chat, new_job

NOW = utcnow()
RESULT = {"choices": [{"message": {"role": "assistant", "content": "the answer"}}]}


def plant(scope: Scope, status: str, age_days: float, *, finished: bool = True) -> str:
    """A job created ``age_days + 1`` days ago (its id says so too) and, when ``finished``, ended
    ``age_days`` ago in ``status`` with a result, usage, cost and one attempt."""
    created = NOW - timedelta(days=age_days + 1)
    job_id = first_id_at(created)[:-16] + "".join(secrets.choice("0123456789ABCDEFGHJKMNPQRSTVWXYZ") for _ in range(16))
    with scope() as s:
        new_job(s, job_id=job_id, request=chat(f"secret prompt {job_id}"))
        jobs.start_attempt(s, job_id, 1, "gpt-4o-mini@sim")
        values: dict[str, Any] = dict(status=status, created_at=created, deployment="gpt-4o-mini@sim")
        if finished:
            values.update(result=RESULT, tokens_in=12, tokens_out=34, cost_usd=0.0042,
                          finished_at=NOW - timedelta(days=age_days), model_used="gpt-4o-mini")
        s.execute(update(Job).where(Job.id == job_id).values(**values))
    return job_id


def state(scope: Scope, job_id: str) -> dict[str, Any] | None:
    with scope(readonly=True) as s:
        job = jobs.get_job_any(s, job_id)
        if job is None:
            return None
        attempts = s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id == job_id))
        return {"request": job.request, "view": jobs.job_view(job), "attempts": attempts}


def purge_all(engine: Engine, config: RetentionConfig, batch: int = retention.BATCH_ROWS) -> tuple[int, int]:
    blanked = deleted = 0
    for _ in range(100):
        done = retention.purge(config, engine=engine, now=NOW, batch=batch)
        blanked, deleted = blanked + done.blanked, deleted + done.deleted
        if not done.more:
            return blanked, deleted
    raise AssertionError("purge never finished")


@pytest.fixture
def planted(scope: Scope, two_tenants: Any) -> dict[str, str]:
    return {
        **{f"old-{st}": plant(scope, st, 40) for st in ("succeeded", "failed", "cancelled", "expired")},
        "ancient": plant(scope, "succeeded", 400),
        "recent": plant(scope, "succeeded", 5),
        **{f"open-{st}": plant(scope, st, 400, finished=False) for st in ("queued", "admitted", "running")},
    }


def test_old_finished_jobs_lose_their_content_and_keep_their_billing(
        scope: Scope, engine: Engine, planted: dict[str, str]) -> None:
    before = {name: state(scope, job_id) for name, job_id in planted.items()}
    assert purge_all(engine, RetentionConfig(job_content_days=30)) == (5, 0)
    for name, job_id in planted.items():
        after = state(scope, job_id)
        assert after is not None
        if name.startswith(("old-", "ancient")):
            assert after["request"] is None and after["view"]["result"] is None
            kept = {k: v for k, v in before[name]["view"].items() if k != "result"}  # type: ignore[index]
            assert {k: v for k, v in after["view"].items() if k != "result"} == kept
            assert after["view"]["usage"]["total_tokens"] == 46 and after["view"]["cost_usd"] == 0.0042
            assert after["attempts"] == 1
        else:
            assert after == before[name], name
    assert purge_all(engine, RetentionConfig(job_content_days=30)) == (0, 0)


def test_old_rows_go_with_their_attempts_and_open_jobs_stay(
        scope: Scope, engine: Engine, planted: dict[str, str]) -> None:
    before = {name: state(scope, job_id) for name, job_id in planted.items()}
    assert purge_all(engine, RetentionConfig(job_content_days=None, jobs_days=30)) == (0, 5)
    gone = {name for name, job_id in planted.items() if state(scope, job_id) is None}
    assert gone == {"old-succeeded", "old-failed", "old-cancelled", "old-expired", "ancient"}
    with scope(readonly=True) as s:
        assert s.scalar(select(func.count()).select_from(Attempt).where(Attempt.job_id.in_(
            [planted[name] for name in gone]))) == 0
    for name in set(planted) - gone:
        assert state(scope, planted[name]) == before[name], name


def test_content_then_rows_on_their_own_schedules(scope: Scope, engine: Engine, planted: dict[str, str]) -> None:
    assert purge_all(engine, RetentionConfig(job_content_days=30, jobs_days=365)) == (5, 1)
    assert state(scope, planted["ancient"]) is None
    assert state(scope, planted["old-failed"])["request"] is None  # type: ignore[index]
    assert state(scope, planted["recent"])["request"] == chat(f"secret prompt {planted['recent']}")  # type: ignore[index]


def test_a_backlog_goes_in_bounded_batches(scope: Scope, engine: Engine, planted: dict[str, str]) -> None:
    first = retention.purge(RetentionConfig(job_content_days=30, jobs_days=365), engine=engine, now=NOW, batch=2)
    assert (first.blanked, first.deleted, first.more) == (2, 1, True)
    assert purge_all(engine, RetentionConfig(job_content_days=30, jobs_days=365), batch=2) == (3, 0)


def test_null_keeps_everything(scope: Scope, engine: Engine, planted: dict[str, str]) -> None:
    before = {name: state(scope, job_id) for name, job_id in planted.items()}
    assert retention.purge(RetentionConfig(job_content_days=None), engine=engine, now=NOW) == retention.Purged()
    assert {name: state(scope, job_id) for name, job_id in planted.items()} == before


def test_a_job_still_open_is_never_touched_even_with_a_finish_time(scope: Scope, engine: Engine,
                                                                   two_tenants: Any) -> None:
    """The purge reads candidates by finish time; the write itself checks the status again."""
    job_id = plant(scope, "running", 400, finished=False)
    with scope() as s:
        s.execute(update(Job).where(Job.id == job_id).values(finished_at=NOW - timedelta(days=400)))
    before = state(scope, job_id)
    assert purge_all(engine, RetentionConfig(job_content_days=30, jobs_days=30)) == (0, 0)
    assert state(scope, job_id) == before


def test_first_id_at_bounds_the_ids_of_jobs_created_before(scope: Scope, two_tenants: Any) -> None:
    with scope() as s:
        job, _ = new_job(s)
    assert first_id_at(job.created_at - timedelta(milliseconds=2)) < job.id < first_id_at(
        datetime.now(job.created_at.tzinfo) + timedelta(milliseconds=2))
