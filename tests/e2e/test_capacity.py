"""Capacity: one worker process holds hundreds of slow provider calls at once (a thread each), and a worker
killed with all of them in flight still leaves every job succeeded once and billed once.

The gateway here is one of its own (worker, scheduler, api, and a simulator that takes 15 s over every
call) on its own key prefix and SQLite file, so the calls the simulator counts are this test's alone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import redis
import yaml
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import TERMINAL_STATUSES, Job, UsageRollup
from shared.db.session import make_engine
from tests.conftest import _TMP, CONFIG, PREFIX, REDIS_URL, free_port, serving, spawn, stop, wait_http
from tests.e2e.test_chaos import _successful_attempts

# Above what a process could hold before: 512 connections in the HTTP pool, 256 in the Redis pool.
CALLS = 600
LATENCY = {"ttft_ms": 15_000, "per_token_ms": 0, "jitter": 0}


@dataclass
class Gateway:
    url: str
    sim_url: str
    key: str
    db_url: str
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]]


@pytest.fixture
def slow_gateway() -> Iterator[Gateway]:
    sim_config = _TMP / "capacity-sim.yaml"
    sim_config.write_text(yaml.safe_dump({"defaults": {"openai": {
        "limits": {"rpm": 1_000_000, "tpm": 1_000_000_000}, "latency": LATENCY}}}))
    with serving("ops.sim", "--config", str(sim_config), log="capacity-sim") as sim_url:
        yield from _gateway(sim_url)


def _gateway(sim_url: str) -> Iterator[Gateway]:
    from shared.db.migrate import upgrade
    from shared.db.tenants import create_key, ensure_tenant

    config = yaml.safe_load(CONFIG.read_text())
    for provider in config["providers"].values():
        provider["base_url"] = provider["base_url"].replace(provider["base_url"].split("/")[2],
                                                            sim_url.removeprefix("http://"))
    path = _TMP / "capacity-gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    prefix, db_url, api_port = f"{PREFIX}cap", f"sqlite:///{_TMP / f'capacity-{uuid.uuid4().hex[:6]}.db'}", free_port()
    env = {"GATEWAY_CONFIG": str(path), "GATEWAY_KEY_PREFIX": prefix, "GATEWAY_DATABASE_URL": db_url}
    upgrade(db_url)
    with Session(make_engine(db_url)) as db:
        ensure_tenant(db, "acme")
        key = create_key(db, "acme", name="capacity")[1]
        db.commit()
    procs = {"worker": spawn("cli", "worker", "--concurrency", str(CALLS), env=env, log="capacity-worker"),
             "scheduler": spawn("cli", "scheduler", env=env, log="capacity-scheduler"),
             "api": spawn("cli", "api", "--port", str(api_port), env=env, log="capacity-api")}
    gateway = Gateway(f"http://127.0.0.1:{api_port}", sim_url, key, db_url, env, procs)
    try:
        wait_http(f"{gateway.url}/healthz", procs["api"])
        yield gateway
    finally:
        for proc in gateway.procs.values():
            stop(proc)
        r = redis.Redis.from_url(REDIS_URL)
        for pattern in (f"{{{prefix}}}*", f"{prefix}*"):
            for found in r.scan_iter(match=pattern, count=1000):
                r.delete(found)


def _in_flight(sim_url: str) -> int:
    return int(httpx.get(f"{sim_url}/sim/stats", params={"series": 0}).json()["in_flight"])


def _wait(what: str, done: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def _ended(db_url: str, ids: list[str]) -> int:
    return sum(n for status, n in _finished(db_url, ids).items() if status in TERMINAL_STATUSES)


def _finished(db_url: str, ids: list[str]) -> dict[str, int]:
    with Session(make_engine(db_url)) as db:
        rows = db.execute(select(Job.status, func.count()).where(Job.id.in_(ids)).group_by(Job.status)).all()
    return {status: n for status, n in rows}


def test_a_worker_holds_hundreds_of_calls_and_one_killed_with_them_bills_each_once(slow_gateway: Gateway) -> None:
    gw, feature = slow_gateway, f"capacity-{uuid.uuid4().hex[:6]}"
    jobs = [{"model": "gpt-4o-mini", "max_tokens": 4, "priority": "standard", "feature": feature,
             "messages": [{"role": "user", "content": f"call {i}"}]} for i in range(CALLS)]
    with httpx.Client(base_url=gw.url, headers={"Authorization": f"Bearer {gw.key}"}, timeout=60) as c:
        r = c.post("/v1/jobs/batch", json={"jobs": jobs})
        assert r.status_code == 202, r.text
        ids = [view["id"] for view in r.json()["data"]]
    # Every call reaches the provider from the one worker before the first can end (15 s each).
    _wait(f"the worker never held {CALLS} calls at once", lambda: _in_flight(gw.sim_url) >= CALLS, timeout=90)
    worker = gw.procs["worker"]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    gw.procs["worker"] = spawn("cli", "worker", "--concurrency", str(CALLS), env=gw.env, log="capacity-worker-2")
    _wait("the jobs did not all end", lambda: _ended(gw.db_url, ids) == CALLS, timeout=180)
    assert _finished(gw.db_url, ids) == {"succeeded": CALLS}
    with Session(make_engine(gw.db_url)) as db:
        assert _successful_attempts(db, ids) == {job_id: 1 for job_id in ids}
        jobs_cost = db.scalar(select(func.sum(Job.cost_usd)).where(Job.id.in_(ids)))
        billed = db.execute(select(func.sum(UsageRollup.succeeded), func.sum(UsageRollup.cost_usd)).where(
            UsageRollup.granularity == "h", UsageRollup.feature == feature)).one()
    assert billed[0] == CALLS
    assert billed[1] == pytest.approx(jobs_cost)
