from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from shared.db import jobs
from shared.errors import Conflict, InvalidRequest, NotFound
from tests.store.conftest import Scope, chat, new_job

pytestmark = pytest.mark.usefixtures("two_tenants")


def test_new_job_is_queued_with_aware_timestamps(scope: Scope) -> None:
    deadline = datetime.now(UTC) + timedelta(minutes=5)
    with scope() as s:
        job, created = new_job(s, lane="batch", feature="summarizer", deadline=deadline, estimate_tokens=42)
    assert created and job.id.startswith("job_") and len(job.id) == 30
    with scope(readonly=True) as s:
        stored = jobs.get_job(s, "acme", job.id)
    assert (stored.status, stored.lane, stored.feature, stored.estimate_tokens) == ("queued", "batch", "summarizer", 42)
    assert stored.request == chat()
    assert stored.deadline == deadline.replace(microsecond=stored.deadline.microsecond)
    assert stored.created_at.tzinfo is not None and stored.deadline.tzinfo is not None


def test_unknown_lane_is_rejected(scope: Scope) -> None:
    with pytest.raises(InvalidRequest, match="unknown priority 'urgent'"), scope() as s:
        new_job(s, lane="urgent")


def test_repeat_with_idempotency_key_returns_the_same_job(scope: Scope) -> None:
    with scope() as s:
        first, created = new_job(s, idempotency_key="order-1")
    with scope() as s:
        again, created_again = new_job(s, idempotency_key="order-1")
        other_tenant, created_other = new_job(s, tenant="globex", idempotency_key="order-1")
    assert created and not created_again and again.id == first.id
    assert created_other and other_tenant.id != first.id


def test_a_key_older_than_24_hours_starts_a_new_job(scope: Scope) -> None:
    from sqlalchemy import update

    from shared.db.models import Job

    with scope() as s:
        first, _ = new_job(s, idempotency_key="nightly")
    with scope() as s:  # the first submission was a day and a minute ago
        day_ago = datetime.now(UTC) - timedelta(hours=24, minutes=1)
        s.execute(update(Job).where(Job.id == first.id).values(created_at=day_ago))
    with scope() as s:
        second, created = new_job(s, idempotency_key="nightly")
    with scope() as s:
        third, created_third = new_job(s, idempotency_key="nightly")
    assert created and second.id != first.id
    assert not created_third and third.id == second.id


def test_same_key_with_a_different_request_conflicts(scope: Scope) -> None:
    with scope() as s:
        new_job(s, idempotency_key="order-1")
    with pytest.raises(Conflict, match="different request"), scope() as s:
        new_job(s, idempotency_key="order-1", request=chat("something else"))


def test_concurrent_repeats_create_exactly_one_job(scope: Scope) -> None:
    callers = 8
    barrier = threading.Barrier(callers)

    def submit(_: int) -> tuple[str, bool]:
        barrier.wait()
        with scope() as s:
            job, created = new_job(s, idempotency_key="race")
            return job.id, created

    with ThreadPoolExecutor(callers) as pool:
        outcomes = list(pool.map(submit, range(callers)))
    assert len({job_id for job_id, _ in outcomes}) == 1
    assert sum(created for _, created in outcomes) == 1
    with scope(readonly=True) as s:
        assert len(jobs.list_jobs(s, "acme")[0]) == 1


def test_tenants_never_see_each_others_jobs(scope: Scope) -> None:
    with scope() as s:
        acme_job, _ = new_job(s, tenant="acme")
        new_job(s, tenant="globex")
    with scope() as s:
        with pytest.raises(NotFound, match="not found"):
            jobs.get_job(s, "globex", acme_job.id)
        with pytest.raises(NotFound):
            jobs.cancel_job(s, "globex", acme_job.id)
        assert acme_job.id not in [j.id for j in jobs.list_jobs(s, "globex")[0]]
        assert jobs.get_job(s, "acme", acme_job.id).status == "queued"


def _all_pages(scope: Scope, tenant: str, limit: int, **filters: str) -> list[list[str]]:
    pages, cursor = [], None
    with scope(readonly=True) as s:
        while True:
            page, cursor = jobs.list_jobs(s, tenant, limit=limit, cursor=cursor, **filters)
            pages.append([j.id for j in page])
            if cursor is None:
                return pages


def test_pagination_is_newest_first_without_gaps_or_duplicates(scope: Scope) -> None:
    with scope() as s:
        features = ["a" if i % 3 else "b" for i in range(23)]
        created = [new_job(s, feature=feature)[0].id for feature in features]
    pages = _all_pages(scope, "acme", limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [job_id for page in pages for job_id in page] == created[::-1]
    only_b = [job_id for page in _all_pages(scope, "acme", limit=3, feature="b") for job_id in page]
    assert only_b == [job_id for job_id, f in zip(created, features, strict=True) if f == "b"][::-1]


def test_exact_last_page_has_no_next_cursor(scope: Scope) -> None:
    with scope() as s:
        for _ in range(4):
            new_job(s)
    assert [len(p) for p in _all_pages(scope, "acme", limit=2)] == [2, 2]


def test_status_filter(scope: Scope) -> None:
    with scope() as s:
        kept, _ = new_job(s)
        gone, _ = new_job(s)
        jobs.cancel_job(s, "acme", gone.id)
    with scope(readonly=True) as s:
        assert [j.id for j in jobs.list_jobs(s, "acme", status="queued")[0]] == [kept.id]
        assert [j.id for j in jobs.list_jobs(s, "acme", status="cancelled")[0]] == [gone.id]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "done"}, "unknown status 'done'"),
        ({"cursor": "garbage!"}, "invalid cursor"),
        ({"cursor": "am9iX2Zvbw"}, "invalid cursor"),  # base64 of "job_foo"
        ({"limit": 0}, "limit must be between"),
    ],
)
def test_bad_listing_parameters_say_what_to_change(scope: Scope, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message), scope(readonly=True) as s:
        jobs.list_jobs(s, "acme", **kwargs)


def test_cancel_only_while_queued(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        admitted, _ = new_job(s)
        assert jobs.mark_admitted(s, admitted.id, "gpt-4o-mini@sim", queued_ms=12)
    with scope() as s:
        cancelled = jobs.cancel_job(s, "acme", job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    assert cancelled.error["type"] == "cancelled"
    with pytest.raises(Conflict, match="is admitted; only a queued job"), scope() as s:
        jobs.cancel_job(s, "acme", admitted.id)
    with pytest.raises(Conflict, match="is cancelled"), scope() as s:
        jobs.cancel_job(s, "acme", job.id)
    with scope() as s:  # the scheduler loses the race against the cancel
        assert not jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=5)
        assert jobs.get_job(s, "acme", job.id).status == "cancelled"


def test_cancel_racing_admission_has_exactly_one_winner(scope: Scope) -> None:
    with scope() as s:
        job_ids = [new_job(s)[0].id for _ in range(5)]

    def cancel(job_id: str) -> bool:
        try:
            with scope() as s:
                jobs.cancel_job(s, "acme", job_id)
            return True
        except Conflict:
            return False

    def admit(job_id: str) -> bool:
        with scope() as s:
            return jobs.mark_admitted(s, job_id, "gpt-4o-mini@sim", queued_ms=1)

    with ThreadPoolExecutor(2) as pool:
        for job_id in job_ids:
            cancelled, admitted = pool.submit(cancel, job_id), pool.submit(admit, job_id)
            assert cancelled.result() != admitted.result()
            with scope(readonly=True) as s:
                status = jobs.get_job(s, "acme", job_id).status
            assert status == ("cancelled" if cancelled.result() else "admitted")


def test_admission_records_deployment_and_wait(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        assert jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=37)
        assert not jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=99)
    with scope(readonly=True) as s:
        stored = jobs.get_job(s, "acme", job.id)
    assert (stored.status, stored.deployment, stored.queued_ms) == ("admitted", "gpt-4o-mini@sim", 37)
    assert stored.admitted_at is not None


def test_redelivered_attempt_is_recorded_once(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=1)
    with scope() as s:
        first = jobs.start_attempt(s, job.id, 1, "gpt-4o-mini@sim")
    with scope() as s:
        assert jobs.start_attempt(s, job.id, 1, "gpt-4o-mini@sim") is None
        assert jobs.get_job(s, "acme", job.id).status == "running"
    assert first is not None
    with scope() as s:
        assert jobs.finish_attempt(s, first.id, status="succeeded", http_status=200, latency_ms=80,
                                   tokens_in=10, tokens_out=5, cost_usd=0.00012)
        assert not jobs.finish_attempt(s, first.id, status="failed", latency_ms=1)
    with scope(readonly=True) as s:
        [attempt] = jobs.list_attempts(s, job.id)
    assert (attempt.status, attempt.http_status, attempt.tokens_in, attempt.tokens_out) == ("succeeded", 200, 10, 5)
    assert attempt.cost_usd == pytest.approx(0.00012) and attempt.finished_at is not None


def test_concurrent_redeliveries_start_one_attempt(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    barrier = threading.Barrier(4)

    def start(_: int) -> bool:
        barrier.wait()
        with scope() as s:
            return jobs.start_attempt(s, job.id, 1, "gpt-4o-mini@sim") is not None

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(start, range(4))) == [False, False, False, True]


def _succeed(scope: Scope, job_id: str, attempts: int = 1) -> None:
    with scope() as s:
        jobs.mark_admitted(s, job_id, "gpt-4o-mini@sim", queued_ms=3)
        for number in range(1, attempts + 1):
            jobs.start_attempt(s, job_id, number, "gpt-4o-mini@sim")


def test_complete_job_applies_the_first_outcome_only(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    _succeed(scope, job.id, attempts=2)
    result = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}
    with scope() as s:
        assert jobs.complete_job(s, job.id, status="succeeded", result=result, model_used="gpt-4o-mini",
                                 tokens_in=10, tokens_out=5, cost_usd=0.0004)
    with scope() as s:
        assert not jobs.complete_job(s, job.id, status="failed", error={"type": "x", "message": "late"})
        assert not jobs.expire_job(s, job.id, "too late")
    with scope(readonly=True) as s:
        view = jobs.job_view(jobs.get_job(s, "acme", job.id))
    assert view["status"] == "succeeded" and view["result"] == result and view["error"] is None
    assert view["attempts"] == 2 and view["deployment"] == "gpt-4o-mini@sim"


def test_complete_job_needs_a_terminal_status(scope: Scope) -> None:
    with pytest.raises(ValueError, match="terminal"), scope() as s:
        jobs.complete_job(s, "job_00000000000000000000000000", status="running")


def test_finished_job_starts_no_attempt(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        jobs.cancel_job(s, "acme", job.id)
        assert jobs.start_attempt(s, job.id, 1, "gpt-4o-mini@sim") is None
        assert jobs.list_attempts(s, job.id) == []


def test_retry_goes_back_to_the_queue(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    _succeed(scope, job.id)
    with scope() as s:
        assert jobs.return_to_queue(s, job.id)
        assert jobs.mark_admitted(s, job.id, "claude-haiku@sim", queued_ms=50)
        assert jobs.start_attempt(s, job.id, 2, "claude-haiku@sim") is not None
        assert jobs.get_job(s, "acme", job.id).attempts == 2


def test_waiting_jobs_past_their_deadline_expire(scope: Scope) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    with scope() as s:
        late, _ = new_job(s, deadline=past)
        on_time, _ = new_job(s)
        running, _ = new_job(s, deadline=past)
    _succeed(scope, running.id)
    with scope() as s:
        assert jobs.overdue_jobs(s) == [late.id]
        assert jobs.expire_job(s, late.id, "deadline passed while queued")
        assert not jobs.expire_job(s, running.id, "already running")
    with scope(readonly=True) as s:
        expired = jobs.get_job(s, "acme", late.id)
        assert jobs.overdue_jobs(s) == []
        assert jobs.get_job(s, "acme", on_time.id).status == "queued"
    assert expired.status == "expired" and expired.error == {
        "type": "deadline_exceeded", "message": "deadline passed while queued"
    }


def test_job_view_is_the_public_shape(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s, lane="interactive", feature="copilot", task="chat")
    _succeed(scope, job.id)
    with scope() as s:
        jobs.complete_job(s, job.id, status="succeeded", result={"object": "chat.completion"},
                          model_used="gpt-4o-mini", tokens_in=7, tokens_out=3, cost_usd=0.25, cache_status="miss")
    with scope(readonly=True) as s:
        view = jobs.job_view(jobs.get_job(s, "acme", job.id))
    assert view["object"] == "gateway.job" and view["tenant"] == "acme"
    assert (view["priority"], view["feature"], view["task"]) == ("interactive", "copilot", "chat")
    assert view["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    assert view["cost_usd"] == pytest.approx(0.25) and view["queued_ms"] == 3
    assert isinstance(view["created_at"], int) and view["finished_at"] >= view["created_at"]
    assert view["deadline"] > view["created_at"]


def test_a_round_of_admissions_skips_jobs_cancelled_meanwhile(scope: Scope) -> None:
    with scope() as s:
        kept, _ = new_job(s)
        gone, _ = new_job(s)
    with scope() as s:
        jobs.cancel_job(s, "acme", gone.id)
    with scope() as s:
        admitted = jobs.mark_admitted_many(s, [(kept.id, "gpt-4o-mini@sim", 12), (gone.id, "gpt-4o-mini@sim", 3)])
    with scope() as s:
        views = {j: jobs.job_view(jobs.get_job(s, "acme", j)) for j in (kept.id, gone.id)}
    assert admitted == {kept.id}
    assert (views[kept.id]["status"], views[kept.id]["deployment"], views[kept.id]["queued_ms"]) == (
        "admitted", "gpt-4o-mini@sim", 12)
    assert views[gone.id]["status"] == "cancelled"
