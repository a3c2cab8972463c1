"""Usage rollups are written with each attempt record, in its transaction, and agree with the attempts."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, event, func, select, text, update
from sqlalchemy.orm import Session

from execution.group_commit import GroupCommit
from shared import usage_report
from shared.config import Settings
from shared.db import jobs, tenants, usage
from shared.db.models import UsageRollup
from shared.db.usage import AttemptUsage, UsageQuery
from tests.store.conftest import Scope, new_job

pytestmark = pytest.mark.usefixtures("two_tenants")
BERLIN = ZoneInfo("Europe/Berlin")
BODY = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
USAGE = AttemptUsage(model="gpt-4o-mini", cached_tokens=4, reasoning_tokens=2, cache_savings_usd=0.00001)


def _job(scope: Scope, tenant: str = "acme", feature: str = "default", key_id: int | None = None) -> str:
    with scope() as s:
        job, _ = new_job(s, tenant=tenant, feature=feature, key_id=key_id)
        jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=1)
    return job.id


def _succeed(db: Session, job_id: str, number: int = 1, cost: float = 0.001) -> Any:
    return jobs.record_attempt(
        db, job_id, number, deployment="gpt-4o-mini@sim", status="succeeded", http_status=200, latency_ms=5,
        tokens_in=10, tokens_out=5, cost_usd=cost, usage=USAGE, zone=BERLIN,
        job_outcome={"status": "succeeded", "result": BODY, "model_used": "gpt-4o-mini", "tokens_in": 10,
                     "tokens_out": 5, "cost_usd": cost})


def _fail(db: Session, job_id: str, number: int, ends: bool) -> Any:
    outcome = {"status": "failed", "error": {"type": "server", "message": "x"}} if ends else None
    return jobs.record_attempt(db, job_id, number, deployment="claude-haiku@sim", status="failed", latency_ms=5,
                               error="server: 500", usage=AttemptUsage(model="claude-haiku-4-5"), zone=BERLIN,
                               job_outcome=outcome)


def _rows(scope: Scope, granularity: str) -> list[UsageRollup]:
    with scope(readonly=True) as s:
        return list(s.scalars(select(UsageRollup).where(UsageRollup.granularity == granularity)
                              .order_by(UsageRollup.deployment)))


def test_an_attempt_counts_in_its_hour_and_its_day(scope: Scope) -> None:
    job_id = _job(scope, feature="summarizer", key_id=7)
    with scope() as s:
        _succeed(s, job_id)
    [hour], [day] = _rows(scope, "h"), _rows(scope, "d")
    with scope(readonly=True) as s:
        [attempt] = jobs.list_attempts(s, job_id)
    done = attempt.finished_at
    assert hour.bucket_start == done.replace(minute=0, second=0, microsecond=0)
    assert day.bucket_start == done.astimezone(BERLIN).replace(hour=0, minute=0, second=0,
                                                               microsecond=0).astimezone(UTC)
    assert (attempt.model, attempt.cached_tokens, attempt.reasoning_tokens, attempt.ended_job) == (
        "gpt-4o-mini", 4, 2, True)
    for row in (hour, day):
        assert (row.tenant_id, row.feature, row.model, row.deployment, row.key_id) == (
            "acme", "summarizer", "gpt-4o-mini", "gpt-4o-mini@sim", 7)
        assert (row.requests, row.succeeded, row.attempts, row.failed_attempts) == (1, 1, 1, 0)
        assert (row.input_tokens, row.cached_tokens, row.output_tokens, row.reasoning_tokens) == (10, 4, 5, 2)
        assert row.cost_usd == pytest.approx(0.001) and row.cache_savings_usd == pytest.approx(0.00001)


def test_failed_attempts_are_counted_and_only_the_last_one_ends_the_request(scope: Scope) -> None:
    job_id = _job(scope)
    with scope() as s:
        _fail(s, job_id, 1, ends=False)
    with scope() as s:
        _fail(s, job_id, 2, ends=True)
    [row] = _rows(scope, "h")
    assert (row.requests, row.succeeded, row.attempts, row.failed_attempts) == (1, 0, 2, 2)


def test_a_redelivered_attempt_is_not_counted_twice(scope: Scope) -> None:
    job_id = _job(scope)
    with scope() as s:
        assert _succeed(s, job_id) is not None
    with scope() as s:
        assert _succeed(s, job_id) is None
    [row] = _rows(scope, "h")
    assert row.attempts == 1 and row.cost_usd == pytest.approx(0.001)


def test_a_rolled_back_record_counts_nothing(scope: Scope) -> None:
    job_id = _job(scope)
    with pytest.raises(RuntimeError), scope() as s:
        _succeed(s, job_id)
        raise RuntimeError("the transaction fails after the record")
    assert _rows(scope, "h") == []


def test_a_group_commit_writes_many_attempts_with_one_statement_per_transaction(scope: Scope, engine: Engine) -> None:
    ids = [_job(scope, tenant=t, feature=f) for t in ("acme", "globex") for f in ("a", "b") for _ in range(10)]
    statements: list[str] = []
    record = lambda *args: statements.append(args[2])  # noqa: E731 - before_cursor_execute's statement
    event.listen(engine, "before_cursor_execute", record)
    try:
        writer = GroupCommit(scope)
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda j: writer.write(lambda db: _succeed(db, j)), ids))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    upserts = sum("INTO usage_rollups" in st for st in statements)
    commits = sum(st.strip().upper().startswith("INSERT INTO ATTEMPTS") for st in statements)
    assert 1 <= upserts <= commits  # at most one per transaction, however many attempts it recorded
    assert sorted((r.tenant_id, r.feature, r.attempts) for r in _rows(scope, "d")) == [
        ("acme", "a", 10), ("acme", "b", 10), ("globex", "a", 10), ("globex", "b", 10)]


def test_the_report_groups_sums_and_scopes_to_a_tenant(scope: Scope) -> None:
    for tenant, feature, n in (("acme", "a", 3), ("acme", "b", 2), ("globex", "a", 4)):
        for _ in range(n):
            job_id = _job(scope, tenant=tenant, feature=feature)
            with scope() as s:
                _succeed(s, job_id, cost=0.01)
    now = datetime.now(UTC)
    query = UsageQuery(now - timedelta(days=2), now + timedelta(days=1), "day", ("tenant", "feature"))
    settings = Settings(billing={"timezone": "Europe/Berlin"})
    with scope(readonly=True) as s:
        rows = usage_report.build(s, settings, query)["data"]
        own = usage_report.build(s, settings, UsageQuery(query.start, query.end, "day", ("feature",),
                                                         tenant="globex"))["data"]
    assert [(r["tenant"], r["feature"], r["requests"]) for r in rows] == [("acme", "a", 3), ("acme", "b", 2),
                                                                          ("globex", "a", 4)]
    assert rows[0]["cost_usd"] == pytest.approx(0.03)
    assert rows[0]["start"].endswith(("+01:00", "+02:00"))  # days in billing.timezone
    assert [(r["feature"], r["requests"]) for r in own] == [("a", 4)]


def test_spent_is_read_back_from_the_day_rows(scope: Scope) -> None:
    for feature in ("a", "a", "b"):
        job_id = _job(scope, feature=feature, key_id=3)
        with scope() as s:
            _succeed(s, job_id, cost=0.25)
    start = usage.day_of(datetime.now(UTC), BERLIN)
    with scope(readonly=True) as s:
        assert usage.spent_usd(s, tenant="acme", feature=None, key_id=None, start=start,
                               end=start + timedelta(days=1)) == pytest.approx(0.75)
        assert usage.spent_usd(s, tenant="acme", feature="a", key_id=None, start=start,
                               end=start + timedelta(days=1)) == pytest.approx(0.5)
        assert usage.spent_usd(s, tenant="acme", feature=None, key_id=4, start=start,
                               end=start + timedelta(days=1)) == 0.0


def test_reconcile_finds_nothing_then_the_row_that_was_changed(scope: Scope) -> None:
    for _ in range(3):
        job_id = _job(scope, key_id=5)
        with scope() as s:
            _succeed(s, job_id)
    now = datetime.now(UTC)
    with scope(readonly=True) as s:
        assert usage.reconcile(s, now - timedelta(days=1), now, BERLIN) == []
    with scope() as s:
        s.execute(update(UsageRollup).where(UsageRollup.granularity == "h")
                  .values(cost_usd=UsageRollup.cost_usd + 1, attempts=UsageRollup.attempts - 1))
    with scope(readonly=True) as s:
        found = usage.reconcile(s, now - timedelta(days=1), now, BERLIN)
    assert sorted(d.measure for d in found) == ["attempts", "cost_usd"]
    assert {d.key[0] for d in found} == {"h"}


def test_the_report_names_a_key_by_its_public_id(scope: Scope) -> None:
    """Report rows name a key by its public id (the management API's name for it)."""
    with scope() as s:
        key, _ = tenants.create_key(s, "acme")
    job_id = _job(scope, key_id=key.id)
    with scope() as s:
        _succeed(s, job_id)
    now = datetime.now(UTC)
    with scope(readonly=True) as s:
        [row] = usage_report.build(s, Settings(), UsageQuery(now - timedelta(hours=2), now + timedelta(hours=1),
                                                             "hour", ("key",)))["data"]
        assert row["key"] == key.public_id
        assert s.execute(select(func.count()).select_from(UsageRollup)).scalar() == 2
        assert s.execute(text("SELECT count(*) FROM attempts WHERE model = 'gpt-4o-mini'")).scalar() == 1


def test_rollups_older_than_their_retention_are_purged(scope: Scope, engine: Engine) -> None:
    from shared.config import RetentionConfig
    from shared.db import retention

    old = datetime.now(UTC) - timedelta(days=41)
    with scope() as s:
        for granularity, start in (("h", old), ("d", old), ("h", datetime.now(UTC))):
            s.add(UsageRollup(granularity=granularity, bucket_start=start, tenant_id="acme", feature="f", model="m",
                              deployment="d", key_id=0, **dict.fromkeys(usage.MEASURES, 0)))
    done = retention.purge(RetentionConfig(usage_days=40, job_content_days=None), engine=engine)
    assert done.rollups == 2
    assert len(_rows(scope, "h")) == 1 and _rows(scope, "d") == []
