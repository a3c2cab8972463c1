"""Recovery puts back what Redis forgot, fails what can never run, and never blames a job for an
outage: a Redis that is down while it works is retried, not written into the job's record. An attempt
orphaned by a killed worker goes back ahead of its tenant's backlog."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from scheduler.recovery import Recovery
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.config import get_settings
from shared.db import jobs
from shared.db.migrate import upgrade
from shared.db.models import Job
from shared.db.session import get_engine, session_scope
from shared.db.tenants import ensure_tenant
from shared.keys import Keys
from shared.queues import WaitingQueues
from tests.conftest import REDIS_URL

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
def recovery(tmp_path: Path) -> Iterator[Recovery]:
    """Recovery on a store and a key prefix of its own (the suite's stack shares neither)."""
    url = f"sqlite:///{tmp_path}/recovery.db"
    upgrade(url)
    engine = get_engine(url)
    with session_scope(engine) as db:
        ensure_tenant(db, "acme")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(f"rc{uuid.uuid4().hex[:8]}")
    settings = get_settings()
    queues, leases = WaitingQueues(client, keys), AttemptLeases(client, keys)
    yield Recovery(settings, queues, leases, Admitter(settings, client, keys), engine=engine)
    for key in client.scan_iter(match=f"{keys.tag}*"):
        client.delete(key)


def _lost_job(recovery: Recovery, request: dict) -> str:
    """A queued job Redis does not hold, old enough for recovery to look at."""
    with session_scope(recovery.engine) as db:
        job, _ = jobs.create_job(db, tenant_id="acme", feature="f", lane="batch", task=None, model="gpt-4o-mini",
                                 request=request, deadline=datetime.now(UTC) + timedelta(hours=1),
                                 idempotency_key=None)
        db.execute(update(Job).where(Job.id == job.id).values(created_at=datetime.now(UTC) - timedelta(minutes=1)))
        return job.id


def _status(recovery: Recovery, job_id: str) -> str:
    with session_scope(recovery.engine, readonly=True) as db:
        job = jobs.get_job_any(db, job_id)
        assert job is not None
        return job.status


def test_a_lost_job_goes_back_to_its_queue_with_its_estimate(recovery: Recovery) -> None:
    job_id = _lost_job(recovery, CHAT)
    assert recovery.run_once()["requeued"] == 1
    assert recovery.queues.missing([job_id]) == []
    assert recovery.queues.waiting_tokens("batch") > 0  # re-estimated, not zero
    assert _status(recovery, job_id) == "queued"


def _orphan(recovery: Recovery) -> str:
    """An admitted job nobody holds (its worker was killed: no lease), admitted long enough ago."""
    job_id = _lost_job(recovery, CHAT)
    with session_scope(recovery.engine) as db:
        db.execute(update(Job).where(Job.id == job_id).values(
            status="admitted", admitted_at=datetime.now(UTC) - timedelta(minutes=1)))
    return job_id


def test_an_orphaned_attempt_goes_back_ahead_of_its_tenants_backlog(recovery: Recovery) -> None:
    """It had its fair turn already; at the back of a long batch backlog it would wait minutes."""
    backlog = [_lost_job(recovery, CHAT) for _ in range(3)]
    assert recovery.run_once()["requeued"] == 3  # the tenant's backlog, waiting in Redis
    orphan = _orphan(recovery)
    assert recovery.run_once()["redispatched"] == 1
    popped = [env.id for env in recovery.queues.pop("batch", "acme", 4)]
    assert popped[0] == orphan and sorted(popped[1:]) == sorted(backlog)
    assert _status(recovery, orphan) == "queued"


def test_a_job_that_can_never_run_is_failed_and_the_others_go_back(recovery: Recovery) -> None:
    bad, good = _lost_job(recovery, {**CHAT, "seed": 2**70}), _lost_job(recovery, CHAT)
    assert recovery.run_once()["requeued"] == 1
    assert _status(recovery, bad) == "failed" and _status(recovery, good) == "queued"
    assert recovery.queues.missing([good]) == []


def test_redis_down_while_it_works_fails_no_job(recovery: Recovery, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _lost_job(recovery, CHAT)

    def down(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(recovery.queues, "push", down)
    with pytest.raises(redis.ConnectionError):  # the scheduler's loop logs it and runs the round again
        recovery.run_once()
    assert _status(recovery, job_id) == "queued"


def test_a_routed_job_comes_back_with_its_route_at_the_tier_it_escalated_to(recovery: Recovery) -> None:
    route = {"task": "classify", "reason": "task classify", "spill": True, "ceiling": "route-large@sim",
             "tiers": [[tier, [f"route-{tier}@sim"]] for tier in ("small", "medium", "large")]}
    with session_scope(recovery.engine) as db:
        job, _ = jobs.create_job(db, tenant_id="acme", feature="f", lane="batch", task="classify", model="auto",
                                 request={**CHAT, "model": "auto"}, deadline=datetime.now(UTC) + timedelta(hours=1),
                                 idempotency_key=None, route=route)
        db.execute(update(Job).where(Job.id == job.id).values(escalations=1, attempts=1))
        row = jobs.get_job_any(db, job.id)
        assert row is not None
        env = recovery.envelope_of(row)
    assert env.route is not None and env.route.to_dict() == route
    assert env.chain == ["route-small@sim", "route-medium@sim", "route-large@sim"]
    assert (env.tier, env.attempt) == (1, 2) and recovery.admitter.candidates(env)[0] == "route-medium@sim"


def test_a_streamed_job_comes_back_streamed_in_its_callers_dialect(recovery: Recovery) -> None:
    stream = {"dialect": "anthropic", "usage": True}
    with session_scope(recovery.engine) as db:
        job, _ = jobs.create_job(db, tenant_id="acme", feature="f", lane="standard", task=None, model="gpt-4o-mini",
                                 request=CHAT, deadline=datetime.now(UTC) + timedelta(hours=1),
                                 idempotency_key=None, stream=stream)
        row = jobs.get_job_any(db, job.id)
        assert row is not None
        env = recovery.envelope_of(row)
    assert env.job.stream == stream
