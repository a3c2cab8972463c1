"""Chaos, bounded in time: kill -9 a worker mid-call, restart Redis empty mid-run. After each, every
accepted job ends in a terminal state, with exactly one successful attempt recorded per success. A
caller streaming from the killed worker gets a clean error event (never a spliced answer or a hang),
and recovery sends its job again as a stream."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import orjson
import pytest
import redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.models import Attempt
from shared.db.session import make_engine, session_scope
from shared.keys import Keys
from tests.conftest import _TMP, PREFIX, REDIS_URL, Stack, free_port, spawn, stop, wait_for_status, wait_http

SLOW = {"model": "slow", "max_tokens": 8, "priority": "standard", "messages": [{"role": "user", "content": "x"}]}


def _in_flight(sim_url: str) -> int:
    return int(httpx.get(f"{sim_url}/sim/stats", params={"series": 0}).json().get("in_flight", 0))


def _wait_in_flight(sim_url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while _in_flight(sim_url) == 0:
        assert time.monotonic() < deadline, "no call reached the provider"
        time.sleep(0.05)


def _successful_attempts(session: Session, job_ids: list[str]) -> dict[str, int]:
    rows = session.execute(select(Attempt.job_id, func.count()).where(
        Attempt.job_id.in_(job_ids), Attempt.status == "succeeded").group_by(Attempt.job_id)).all()
    return {job_id: n for job_id, n in rows}


def test_kill_9_a_worker_with_calls_in_flight(stack: Stack) -> None:
    with stack.client("globex") as c:
        ids = [c.post("/v1/jobs", json=SLOW).json()["id"] for _ in range(8)]
        _wait_in_flight(stack.sim_url)
        _kill_worker(stack, "worker-after-kill")
        done = [wait_for_status(c, job_id, {"succeeded", "failed", "expired"}, timeout=90) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * len(ids)
    with session_scope(readonly=True) as db:
        assert _successful_attempts(db, ids) == {job_id: 1 for job_id in ids}


def _kill_worker(stack: Stack, log: str) -> None:
    worker = stack.procs["worker"]
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    stack.procs["worker"] = spawn("cli", "worker", "--concurrency", "16", log=log)


def test_kill_9_a_worker_mid_stream(stack: Stack) -> None:
    body = {"model": "drip", "max_tokens": 200, "stream": True,  # ~4 s of events
            "messages": [{"role": "user", "content": f"A long story {uuid.uuid4().hex[:8]}"}]}
    with stack.client() as c, c.stream("POST", "/v1/chat/completions", json=body,
                                       headers={"x-gateway-priority": "standard"}) as r:  # a worker sends it
        job_id, data = r.headers["x-gateway-job-id"], []
        for line in r.iter_lines():  # read to its end: bounded (the test's timeout), no hang
            if line.startswith("data: {"):
                data.append(orjson.loads(line[6:]))
                if len(data) == 3:
                    _kill_worker(stack, "worker-after-stream-kill")
    assert data[-1]["error"]["code"] == "stream_interrupted"  # the caller's dialect; no spliced answer
    assert all("error" not in d for d in data[:-1])
    with stack.client() as c:
        job = wait_for_status(c, job_id, {"succeeded", "failed"}, timeout=90)
    assert job["status"] == "succeeded", (job["error"], job.get("attempts"))
    with session_scope(readonly=True) as db:
        assert _successful_attempts(db, [job_id]) == {job_id: 1}  # billed once
    entries = [orjson.loads(fields["j"]) for _, fields in
               redis.Redis.from_url(REDIS_URL, decode_responses=True).xrange(Keys(PREFIX).job_stream(job_id))]
    starts = [e for e in entries if e["t"] == "start"]
    assert len(starts) == 2 and starts[0]["w"] != starts[1]["w"]  # recovery sent it again as a stream
    assert entries[-1]["t"] == "end" and entries[-1]["status"] == "done"


@dataclass
class Island:
    """A gateway on a Redis of its own, so the test can kill that Redis."""

    url: str
    key: str
    redis_port: int
    db_url: str
    procs: list[subprocess.Popen[bytes]]


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                             "--bind", "127.0.0.1"], stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            import redis

            if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                return proc
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture
def island(sim_url: str) -> Iterator[Island]:
    port, api_port = free_port(), free_port()
    redis_proc = _redis_server(port)
    db_url = f"sqlite:///{_TMP / f'island-{uuid.uuid4().hex[:6]}.db'}"
    env = {"GATEWAY_REDIS_URL": f"redis://127.0.0.1:{port}/0", "GATEWAY_DATABASE_URL": db_url,
           "GATEWAY_KEY_PREFIX": "gwisland"}
    from shared.db.migrate import upgrade
    from shared.db.tenants import create_key, ensure_tenant

    upgrade(db_url)
    with Session(make_engine(db_url)) as db:
        ensure_tenant(db, "acme")
        key = create_key(db, "acme", name="island")[1]
        db.commit()
    procs = [spawn("cli", "worker", "--concurrency", "16", env=env, log="island-worker"),
             spawn("cli", "scheduler", env=env, log="island-scheduler"),
             spawn("cli", "api", "--port", str(api_port), env=env, log="island-api")]
    island = Island(f"http://127.0.0.1:{api_port}", key, port, db_url, procs + [redis_proc])
    try:
        wait_http(f"{island.url}/healthz", procs[2])
        yield island
    finally:
        for proc in island.procs:
            stop(proc)


def test_redis_restarting_empty_loses_no_job(island: Island, sim_url: str) -> None:
    with httpx.Client(base_url=island.url, headers={"Authorization": f"Bearer {island.key}"}, timeout=30) as c:
        ids = [c.post("/v1/jobs", json=SLOW).json()["id"] for _ in range(8)]
        _wait_in_flight(sim_url)
        redis_proc = island.procs.pop()
        redis_proc.kill()
        redis_proc.wait()
        refused = c.post("/v1/jobs", json=SLOW)  # while Redis is down: a clear 503, nothing half-written
        island.procs.append(_redis_server(island.redis_port))  # same port, nothing in it
        done = [wait_for_status(c, job_id, {"succeeded", "failed", "expired"}, timeout=90) for job_id in ids]
    assert [j["status"] for j in done] == ["succeeded"] * len(ids)
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_unavailable"
    with Session(make_engine(island.db_url)) as db:
        assert _successful_attempts(db, ids) == {job_id: 1 for job_id in ids}
