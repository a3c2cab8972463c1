"""``create_jobs``, the bulk insert behind ``POST /v1/jobs/batch``, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, update

from shared.db import jobs
from shared.db.ids import new_job_id
from shared.db.models import Job
from shared.errors import Conflict, NotFound
from tests.store.conftest import Scope, chat, new_job, soon

pytestmark = pytest.mark.usefixtures("two_tenants")


def row(key: str | None = None, text: str = "hi", **overrides: Any) -> jobs.NewJob:
    fields: dict[str, Any] = dict(job_id=new_job_id(), feature="default", lane="batch", task=None, model="fast",
                                  request=chat(text), deadline=soon(), idempotency_key=key, estimate_tokens=12)
    return jobs.NewJob(**{**fields, **overrides})


def test_rows_are_the_same_as_create_job_writes(scope: Scope) -> None:
    deadline = soon()
    with scope() as s:
        single, _ = new_job(s, lane="batch", task="t", deadline=deadline, estimate_tokens=12)
        (view, created), = jobs.create_jobs(s, "acme", [row(task="t", deadline=deadline)])
    with scope(readonly=True) as s:
        stored = [jobs.get_job(s, "acme", job_id) for job_id in (single.id, view["id"])]
    columns = [c.name for c in Job.__table__.c if c.name not in ("id", "created_at", "updated_at")]
    assert created
    assert [getattr(stored[1], c) for c in columns] == [getattr(stored[0], c) for c in columns]
    assert view == jobs.job_view(stored[1])


def test_one_select_and_one_insert_for_a_batch(scope: Scope, engine: Any) -> None:
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2].split()[0]))
    with scope() as s:
        results = jobs.create_jobs(s, "acme", [row(f"k{i}") for i in range(50)] + [row() for _ in range(50)])
    assert len(results) == 100 and all(created for _, created in results)
    assert statements.count("SELECT") == 1 and statements.count("INSERT") == 1


def test_used_keys_return_their_jobs_in_input_order(scope: Scope) -> None:
    with scope() as s:
        first = jobs.create_jobs(s, "acme", [row("a"), row("b")])
    with scope() as s:
        again = jobs.create_jobs(s, "acme", [row(), row("b"), row("c"), row("a")])
        other_tenant = jobs.create_jobs(s, "globex", [row("a")])
    assert [created for _, created in again] == [True, False, True, False]
    assert again[1][0]["id"] == first[1][0]["id"] and again[3][0]["id"] == first[0][0]["id"]
    assert other_tenant[0][1] and other_tenant[0][0]["id"] != first[0][0]["id"]


def test_a_key_older_than_24_hours_is_free_again(scope: Scope) -> None:
    with scope() as s:
        (old, _), = jobs.create_jobs(s, "acme", [row("nightly")])
    with scope() as s:
        day_ago = datetime.now(UTC) - timedelta(hours=24, minutes=1)
        s.execute(update(Job).where(Job.id == old["id"]).values(created_at=day_ago))
    with scope() as s:
        (new, created), = jobs.create_jobs(s, "acme", [row("nightly")])
    with scope(readonly=True) as s:
        assert jobs.get_job(s, "acme", old["id"]).idempotency_key is None
    assert created and new["id"] != old["id"]


def test_a_key_reused_for_another_request_names_the_row_and_writes_nothing(scope: Scope) -> None:
    with scope() as s:
        jobs.create_jobs(s, "acme", [row("order-1")])
    with pytest.raises(Conflict, match="different request") as refused, scope() as s:
        jobs.create_jobs(s, "acme", [row(feature="lost"), row("order-1", text="something else")])
    assert refused.value.param == "jobs.1.idempotency_key"
    assert refused.value.message.startswith("jobs.1.idempotency_key: ")
    with scope(readonly=True) as s:
        assert jobs.list_jobs(s, "acme", feature="lost")[0] == []


def test_a_missing_tenant_is_not_found(scope: Scope) -> None:
    with pytest.raises(NotFound, match="tenant 'initech'"), scope() as s:
        jobs.create_jobs(s, "initech", [row()])


def test_fail_jobs_fails_only_the_open_ones_in_one_statement(scope: Scope) -> None:
    with scope() as s:
        results = jobs.create_jobs(s, "acme", [row() for _ in range(3)])
    ids = [view["id"] for view, _ in results]
    with scope() as s:
        jobs.cancel_job(s, "acme", ids[0])
    with scope() as s:
        failed = jobs.fail_jobs(s, ids, {"type": "queue_unavailable", "message": "redis down"})
    with scope(readonly=True) as s:
        stored = [jobs.get_job(s, "acme", job_id) for job_id in ids]
    assert failed == 2
    assert [j.status for j in stored] == ["cancelled", "failed", "failed"]
    assert stored[1].error == {"type": "queue_unavailable", "message": "redis down"}
    assert stored[1].finished_at is not None
