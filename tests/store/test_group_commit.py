"""The worker's group commit: attempts finished together are written together, each exactly once."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from execution.group_commit import GroupCommit
from shared.db import jobs
from tests.store.conftest import Scope, new_job

pytestmark = pytest.mark.usefixtures("two_tenants")

BODY = {"id": "chatcmpl-1", "object": "chat.completion", "choices": []}


def _admitted_jobs(scope: Scope, n: int) -> list[str]:
    ids = []
    with scope() as s:
        for _ in range(n):
            job, _ = new_job(s)
            jobs.mark_admitted(s, job.id, "gpt-4o-mini@sim", queued_ms=1)
            ids.append(job.id)
    return ids


def _success(job_id: str) -> Any:
    def write(db: Session) -> dict[str, Any] | None:
        return jobs.record_attempt(
            db, job_id, 1, deployment="gpt-4o-mini@sim", status="succeeded", http_status=200, latency_ms=5,
            tokens_in=10, tokens_out=5, cost_usd=0.0001,
            job_outcome={"status": "succeeded", "result": BODY, "model_used": "gpt-4o-mini",
                         "deployment": "gpt-4o-mini@sim", "tokens_in": 10, "tokens_out": 5, "cost_usd": 0.0001})
    return write


def test_concurrent_records_all_land_once_with_their_own_views(scope: Scope) -> None:
    ids = _admitted_jobs(scope, 40)
    writer = GroupCommit(scope)
    with ThreadPoolExecutor(16) as pool:
        views = list(pool.map(lambda j: writer.write(_success(j)), ids))
        again = list(pool.map(lambda j: writer.write(_success(j)), ids))  # redelivered: refused
    assert [v["id"] for v in views] == ids
    assert all(v["status"] == "succeeded" for v in views)
    assert again == [None] * len(ids)
    with scope(readonly=True) as s:
        assert s.execute(text("SELECT count(*) FROM attempts")).scalar() == 40
        assert s.execute(text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")).scalar() == 40


def test_a_failing_write_fails_alone_and_its_group_still_lands(scope: Scope) -> None:
    ids = _admitted_jobs(scope, 5)
    writer = GroupCommit(scope)
    gate, started = threading.Event(), threading.Event()

    def held(db: Session) -> str:  # occupies the writer while the next group queues up behind it
        started.set()
        gate.wait(10)
        return "first"

    def broken(db: Session) -> None:
        db.execute(text("SELECT * FROM no_such_table"))

    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(writer.write, held)
        assert started.wait(10)  # the writer is busy with the held write
        bad = pool.submit(writer.write, broken)
        good = [pool.submit(writer.write, _success(j)) for j in ids]
        deadline = time.monotonic() + 10
        while writer._queue.qsize() < 6 and time.monotonic() < deadline:  # all six wait: one group
            time.sleep(0.001)
        gate.set()
        assert first.result() == "first"
        with pytest.raises(Exception, match="no_such_table"):
            bad.result()
        assert [f.result()["status"] for f in good] == ["succeeded"] * 5
    with scope(readonly=True) as s:
        assert s.execute(text("SELECT count(*) FROM attempts")).scalar() == 5
