"""The worker's one-call attempt record and the api's one-statement job insert."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from shared.db import jobs
from shared.db.ids import new_job_id
from shared.errors import NotFound
from tests.store.conftest import Scope, new_job

pytestmark = pytest.mark.usefixtures("two_tenants")

BODY = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}


def _success(number: int = 1, **outcome: Any) -> dict[str, Any]:
    return dict(
        deployment="gpt-4o-mini@sim", status="succeeded", http_status=200, latency_ms=80, tokens_in=10,
        tokens_out=5, cost_usd=0.00012,
        job_outcome={"status": "succeeded", "result": BODY, "model_used": "gpt-4o-mini",
                     "deployment": "gpt-4o-mini@sim", "tokens_in": 10, "tokens_out": 5, "cost_usd": 0.00012,
                     **outcome},
    )


def test_success_records_the_attempt_and_ends_the_job(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=3)
    with scope() as s:
        view = jobs.record_attempt(s, job.id, 1, **_success())
    with scope(readonly=True) as s:
        stored = jobs.job_view(jobs.get_job(s, "acme", job.id))
        [attempt] = jobs.list_attempts(s, job.id)
    assert view == stored
    assert (view["status"], view["result"], view["model_used"], view["attempts"]) == ("succeeded", BODY,
                                                                                      "gpt-4o-mini", 1)
    assert view["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
    assert view["cost_usd"] == pytest.approx(0.00012) and view["queued_ms"] == 3
    assert (attempt.number, attempt.status, attempt.http_status, attempt.tokens_in, attempt.latency_ms) == (
        1, "succeeded", 200, 10, 80)
    assert attempt.started_at < attempt.finished_at


def test_redelivered_attempt_changes_nothing(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    with scope() as s:
        assert jobs.record_attempt(s, job.id, 1, **_success()) is not None
    with scope() as s:
        assert jobs.record_attempt(s, job.id, 1, **_success(status="failed", result=None)) is None
    with scope(readonly=True) as s:
        assert jobs.get_job(s, "acme", job.id).status == "succeeded"
        assert len(jobs.list_attempts(s, job.id)) == 1


def test_concurrent_redeliveries_record_one_attempt(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    barrier = threading.Barrier(4)

    def record(_: int) -> bool:
        barrier.wait()
        with scope() as s:
            return jobs.record_attempt(s, job.id, 1, **_success()) is not None

    with ThreadPoolExecutor(4) as pool:
        assert sorted(pool.map(record, range(4))) == [False, False, False, True]


def test_failure_that_goes_on_puts_the_job_back_in_the_queue(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
    with scope() as s:
        view = jobs.record_attempt(s, job.id, 1, deployment="gpt-4o-mini@sim", status="failed",
                                   http_status=503, error="overloaded: try later", latency_ms=4)
    assert view is not None and (view["status"], view["attempts"], view["deployment"]) == (
        "queued", 1, "gpt-4o-mini@sim")  # to be admitted again as the retry
    with scope() as s:
        view = jobs.record_attempt(s, job.id, 2, deployment="claude-haiku@sim", status="failed", latency_ms=4,
                                   job_outcome={"status": "failed", "error": {"type": "server_error"},
                                                "deployment": "claude-haiku@sim"})
    assert view is not None and (view["status"], view["attempts"], view["error"]) == (
        "failed", 2, {"type": "server_error"})
    assert view["deployment"] == "claude-haiku@sim" and view["finished_at"] is not None


def test_finished_or_missing_job_records_no_attempt(scope: Scope) -> None:
    with scope() as s:
        job, _ = new_job(s)
        jobs.cancel_job(s, "acme", job.id)
        assert jobs.record_attempt(s, job.id, 1, **_success()) is None
        assert jobs.record_attempt(s, new_job_id(), 1, **_success()) is None
        assert jobs.list_attempts(s, job.id) == []
        assert jobs.get_job(s, "acme", job.id).status == "cancelled"


def test_job_outcome_must_be_terminal(scope: Scope) -> None:
    with pytest.raises(ValueError, match="terminal"), scope() as s:
        job, _ = new_job(s)
        jobs.record_attempt(s, job.id, 1, **_success(status="running"))


def test_created_job_can_still_be_changed_in_the_same_transaction(scope: Scope) -> None:
    with scope() as s:
        job, created = new_job(s)
        job.status, job.deployment, job.queued_ms = "admitted", "gpt-4o-mini@sim", 0
        s.flush()
        view = jobs.job_view(job)
    with scope(readonly=True) as s:
        assert jobs.job_view(jobs.get_job(s, "acme", job.id)) == view
    assert created and view["status"] == "admitted" and view["result"] is None and view["error"] is None


def test_job_can_be_created_admitted(scope: Scope) -> None:
    job_id = new_job_id()
    with scope() as s:
        job, created = new_job(s, lane="interactive", job_id=job_id, admitted_deployment="gpt-4o-mini@sim")
    with scope(readonly=True) as s:
        stored = jobs.get_job(s, "acme", job_id)
    assert created and job.id == job_id and jobs.job_view(job) == jobs.job_view(stored)
    assert (stored.status, stored.deployment, stored.queued_ms) == ("admitted", "gpt-4o-mini@sim", 0)
    assert stored.admitted_at == stored.created_at


def test_job_of_an_unknown_tenant_is_not_found(scope: Scope) -> None:
    with pytest.raises(NotFound, match="tenant 'initech' does not exist"), scope() as s:
        new_job(s, tenant="initech")
