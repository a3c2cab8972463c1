"""No single job, however malformed, stops the gateway: rows and envelopes that no api would accept
today (an older version's, a corrupted one) are planted behind the api's back, and each ends as
failed with the reason while the scheduler, the workers and the api go on serving."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis
from sqlalchemy import text, update

from shared.config import get_settings
from shared.db import jobs
from shared.db.models import Job
from shared.db.session import session_scope
from shared.keys import Keys
from tests.conftest import PREFIX, REDIS_URL, Stack, wait_for_status
from tests.envelopes import make_envelope

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still serving?"}]}


def _plant(request: dict[str, Any], *, age_s: float = 60, lane: str = "batch") -> str:
    """A queued job of acme's written straight into the store (no api checked it), ``age_s`` old."""
    with session_scope() as db:
        job, _ = jobs.create_job(db, tenant_id="acme", feature=f"poison-{uuid.uuid4().hex[:6]}", lane=lane,
                                 task=None, model="gpt-4o-mini", request=request,
                                 deadline=datetime.now(UTC) + timedelta(hours=1), idempotency_key=None)
        db.execute(update(Job).where(Job.id == job.id).values(created_at=datetime.now(UTC) - timedelta(seconds=age_s)))
        return job.id


def _still_serving(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=GOOD)
    assert r.status_code == 200, r.text
    assert all(proc.poll() is None for proc in stack.procs.values()), "a gateway process died"


def _failed_with(stack: Stack, job_id: str, words: str) -> dict[str, Any]:
    with stack.client() as c:
        view = wait_for_status(c, job_id, {"failed", "succeeded", "expired", "cancelled"}, timeout=30)
    assert view["status"] == "failed", view
    assert view["error"]["type"] == "invalid_job" and words in view["error"]["message"], view["error"]
    return view


def test_a_stored_request_no_api_would_accept_is_failed_by_the_reconciler(stack: Stack) -> None:
    huge = _plant({**GOOD, "seed": 2**70})  # orjson cannot serialise it: this once killed the scheduler
    unreadable = _plant(GOOD)
    with session_scope() as db:  # SQLite's JSON is text: corrupt it
        db.execute(text("UPDATE jobs SET request = '{not json' WHERE id = :id"), {"id": unreadable})
    wrong_shape = _plant({"model": "gpt-4o-mini", "messages": "not a list"})
    _failed_with(stack, huge, "64-bit")
    _failed_with(stack, unreadable, "invalid")
    _failed_with(stack, wrong_shape, "messages")
    _still_serving(stack)


def _push_raw(r: redis.Redis, lane: str, tenant: str, raw: bytes, job_id: str | None = None) -> None:
    """What ``WaitingQueues.push`` does, with an entry it would never write."""
    keys = Keys(PREFIX)
    with r.pipeline(transaction=True) as pipe:
        pipe.rpush(keys.waiting(lane, tenant), raw)
        pipe.sadd(keys.active_tenants(lane), tenant)
        pipe.incr(keys.waiting_count(lane))
        if job_id:
            pipe.sadd(keys.queued_ids, job_id)
        pipe.lpush(keys.wake, "1")
        pipe.execute()


def test_a_queued_envelope_the_scheduler_cannot_read_fails_its_job_and_not_the_queue(stack: Stack) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    old_version = _plant(GOOD, age_s=0)
    envelope = make_envelope("acme", request=GOOD, chain=["gpt-4o-mini@sim"], model="gpt-4o-mini",
                             job_id=old_version, feature="poison")
    fields = {k: v for k, v in orjson.loads(envelope.dumps()).items() if k != "request"}  # an incompatible version
    wrong_types = _plant(GOOD, age_s=0)
    bad_types = {**orjson.loads(envelope.dumps()), "id": wrong_types, "estimate": "lots", "chain": "nope"}
    _push_raw(r, "batch", "acme", b"{this is not json", None)
    _push_raw(r, "batch", "acme", orjson.dumps(fields), old_version)
    _push_raw(r, "batch", "acme", orjson.dumps(bad_types), wrong_types)
    behind = _plant(GOOD, age_s=0)  # a healthy job behind them in the same queue
    _push_raw(r, "batch", "acme", orjson.dumps({**orjson.loads(envelope.dumps()), "id": behind}), behind)
    _failed_with(stack, old_version, "unreadable")
    _failed_with(stack, wrong_types, "unreadable")
    with stack.client() as c:
        assert wait_for_status(c, behind, {"succeeded", "failed"})["status"] == "succeeded"
    _still_serving(stack)


def test_a_dispatched_envelope_a_worker_cannot_read_fails_its_job(stack: Stack) -> None:
    from worker.celery_app import celery_app
    from worker.tasks import EXECUTE_MANY_TASK, EXECUTE_TASK

    one, many = _plant(GOOD, age_s=0), _plant(GOOD, age_s=0)
    with session_scope() as db:  # as if admitted: the scheduler and recovery leave them to the worker
        db.execute(update(Job).where(Job.id.in_([one, many])).values(status="admitted",
                                                                      admitted_at=datetime.now(UTC)))
    queue = Keys(get_settings().key_prefix).exec_queue("batch")
    celery_app.send_task(EXECUTE_TASK, args=[{"id": one, "attempt": "first"}], queue=queue)
    celery_app.send_task(EXECUTE_MANY_TASK, args=[[{"id": many, "tenant": 7}, "not even a dict"]], queue=queue)
    _failed_with(stack, one, "unreadable")
    _failed_with(stack, many, "unreadable")
    _still_serving(stack)
