"""A dispatch's lease stays alive while its message waits in the broker or in the worker that took it,
and runs out within seconds when the message was lost on the way (kombu pops a message before it
records it as unacknowledged: one that reaches a worker as it dies is gone). Real Redis, real kombu
messages published by the Celery dispatch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import update

from scheduler.recovery import Recovery
from scheduler.waiting_dispatches import WaitingDispatches
from shared.admission import Admitter
from shared.attempt_leases import AttemptLeases
from shared.config import Settings, get_settings
from shared.db import jobs
from shared.db.migrate import upgrade
from shared.db.models import Job
from shared.db.session import get_engine, session_scope
from shared.db.tenants import ensure_tenant
from shared.keys import Keys
from shared.queues import WaitingQueues
from tests.conftest import REDIS_URL
from tests.envelopes import make_envelope
from worker.celery_app import make_celery
from worker.dispatch import CeleryDispatch
from worker.tasks import _Executor

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
def settings() -> Iterator[Settings]:
    """The suite's settings on a key prefix of their own (the broker's queues included)."""
    settings = get_settings().model_copy(update={"key_prefix": f"wd{uuid.uuid4().hex[:8]}"})
    yield settings
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"*{settings.key_prefix}*"):
        client.delete(key)


def _leases(settings: Settings) -> AttemptLeases:
    return AttemptLeases(redis.Redis.from_url(REDIS_URL, decode_responses=True), Keys(settings.key_prefix))


def _ttl_s(leases: AttemptLeases, job_id: str) -> float:
    return float(leases.r.pttl(leases.keys.lease(job_id))) / 1000


def test_a_message_waiting_in_the_broker_keeps_its_lease_and_a_lost_one_does_not(settings: Settings) -> None:
    leases = _leases(settings)
    dispatch = CeleryDispatch(make_celery(settings), Keys(settings.key_prefix))
    waiting_env, lost_env = make_envelope("acme", "batch"), make_envelope("acme", "batch")
    leases.grant([waiting_env, lost_env], 1.0)
    dispatch.send_many([waiting_env])  # published, no worker running: it waits in the broker
    dispatch.send(lost_env)
    watch = WaitingDispatches(leases)
    assert sorted(watch.waiting()) == sorted([(waiting_env.id, waiting_env.token), (lost_env.id, lost_env.token)])
    # A worker pops the second message and dies before recording it: the message is gone.
    queue = next(key for key in watch.queue_keys() if key.endswith(".batch"))
    leases.r.lpop(queue)
    assert watch.waiting() == [(waiting_env.id, waiting_env.token)]
    assert watch.extend(30.0) == 1
    assert _ttl_s(leases, waiting_env.id) > 20
    assert _ttl_s(leases, lost_env.id) <= 1.0  # nobody extends it: it runs out and recovery resends


def test_a_newer_dispatch_is_never_extended_by_an_older_message(settings: Settings) -> None:
    leases = _leases(settings)
    dispatch = CeleryDispatch(make_celery(settings), Keys(settings.key_prefix))
    env = make_envelope("acme", "standard")
    leases.grant([env], 1.0)
    dispatch.send(env)
    old_token = env.token
    leases.grant([env], 1.0)  # recovery dispatched it again under a new token
    assert env.token != old_token
    assert WaitingDispatches(leases).extend(30.0) == 0
    assert _ttl_s(leases, env.id) <= 1.0


def test_a_worker_keeps_the_leases_of_a_message_it_received_until_it_runs(settings: Settings) -> None:
    leases = _leases(settings)
    env = make_envelope("acme", "batch")
    leases.grant([env], 0.5)
    executor = _Executor(settings)
    ctx, _ = executor.get()
    try:
        executor.hold_received({"gw_leases": f"{env.id}:{env.token} malformed"})
        ctx.keeper.renew()  # one heartbeat
        assert _ttl_s(leases, env.id) > settings.admission.attempt_lease_s - 1
        ctx.keeper.drop(env)  # its attempt ended
        assert ctx.keeper.held() == 0
    finally:
        ctx.keeper.stop()


def test_a_received_message_whose_lease_redis_forgot_is_let_go(settings: Settings) -> None:
    """A Redis that restarted empty lost the message too, and Celery drops what it had prefetched: the
    worker must not take the lease back (recovery would never see the job as orphaned)."""
    leases = _leases(settings)
    env = make_envelope("acme", "batch")
    leases.grant([env], 5.0)
    executor = _Executor(settings)
    ctx, _ = executor.get()
    try:
        executor.hold_received({"gw_leases": f"{env.id}:{env.token}"})
        leases.r.delete(leases.keys.lease(env.id))  # Redis restarted empty
        ctx.keeper.renew()
        assert leases.r.get(leases.keys.lease(env.id)) is None
        assert ctx.keeper.held() == 0
    finally:
        ctx.keeper.stop()


@pytest.fixture
def recovery(tmp_path: Path, settings: Settings) -> Recovery:
    url = f"sqlite:///{tmp_path}/recovery.db"
    upgrade(url)
    engine = get_engine(url)
    with session_scope(engine) as db:
        ensure_tenant(db, "acme")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    keys = Keys(settings.key_prefix)
    return Recovery(settings, WaitingQueues(client, keys), AttemptLeases(client, keys),
                    Admitter(settings, client, keys), engine=engine)


def _admitted_job(recovery: Recovery) -> str:
    with session_scope(recovery.engine) as db:
        job, _ = jobs.create_job(db, tenant_id="acme", feature="f", lane="batch", task=None, model="gpt-4o-mini",
                                 request=CHAT, deadline=datetime.now(UTC) + timedelta(hours=1), idempotency_key=None)
        db.execute(update(Job).where(Job.id == job.id).values(
            status="admitted", created_at=datetime.now(UTC) - timedelta(minutes=1),
            admitted_at=datetime.now(UTC) - timedelta(minutes=1)))
        return job.id


def test_recovery_resends_the_lost_dispatch_and_leaves_the_waiting_one(recovery: Recovery, settings: Settings) -> None:
    dispatch = CeleryDispatch(make_celery(settings), Keys(settings.key_prefix))
    waiting_env = make_envelope("acme", "batch", job_id=_admitted_job(recovery))
    lost_env = make_envelope("acme", "batch", job_id=_admitted_job(recovery))
    recovery.leases.grant([waiting_env, lost_env], 0.3)
    dispatch.send(waiting_env)  # the other message was lost on its way to a worker
    assert recovery.run_once() == {"requeued": 0, "redispatched": 0, "waiting_dispatches": 1}
    time.sleep(0.5)  # both first leases would have run out by now
    assert recovery.run_once() == {"requeued": 0, "redispatched": 1, "waiting_dispatches": 1}
    assert recovery.queues.pop("batch", "acme", 5)[0].id == lost_env.id
