"""The same path with PostgreSQL as the result store: api, scheduler and worker processes on PG."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from tests.conftest import free_port, spawn, stop, wait_for_status, wait_http

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(scope="module")
def pg_gateway(sim_url: str) -> Iterator[tuple[str, str]]:
    psycopg = pytest.importorskip("psycopg")
    name = f"gw_e2e_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable on 127.0.0.1:5432: {exc}")
    url = f"postgresql://postgres@127.0.0.1:5432/{name}"
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_KEY_PREFIX": f"gwpg{uuid.uuid4().hex[:6]}"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    procs = []
    try:
        from sqlalchemy.orm import Session

        from shared.db.migrate import upgrade
        from shared.db.session import make_engine
        from shared.db.tenants import create_key, ensure_tenant

        upgrade(url)
        with Session(make_engine(url)) as db:
            ensure_tenant(db, "acme")
            key = create_key(db, "acme", name="pg")[1]
            db.commit()
        procs = [spawn("cli", "worker", "--concurrency", "8", env=env, log="pg-worker"),
                 spawn("cli", "scheduler", env=env, log="pg-scheduler"),
                 spawn("cli", "api", "--port", str(port), env=env, log="pg-api")]
        wait_http(f"http://127.0.0.1:{port}/healthz", procs[2])
        yield f"http://127.0.0.1:{port}", key
    finally:
        for proc in procs:
            stop(proc)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_sync_and_async_jobs_on_postgres(pg_gateway: tuple[str, str]) -> None:
    url, key = pg_gateway
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
    completion = client.chat.completions.create(model="gpt-4o-mini", max_tokens=8,
                                                messages=[{"role": "user", "content": "on postgres"}])
    assert completion.choices[0].message.content
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        job = c.post("/v1/jobs", json={"model": "gpt-4o-mini", "priority": "batch", "idempotency_key": "pg-1",
                                       "messages": [{"role": "user", "content": "x"}]}).json()
        again = c.post("/v1/jobs", json={"model": "gpt-4o-mini", "idempotency_key": "pg-1",
                                         "messages": [{"role": "user", "content": "x"}]}).json()
        done = wait_for_status(c, job["id"], {"succeeded", "failed"})
        listed = c.get("/v1/jobs", params={"limit": 10}).json()
        ready = c.get("/readyz").json()
    assert again["id"] == job["id"]
    assert done["status"] == "succeeded" and done["cost_usd"] > 0
    assert job["id"] in {j["id"] for j in listed["data"]}
    assert ready["checks"]["database"] == "ok"


@pytest.mark.parametrize("extra", ['"user": "a\\u0000b"', '"logit_bias": {"1": NaN}', '"seed": 18446744073709551616'])
def test_values_jsonb_cannot_hold_are_a_400_on_postgres_too(pg_gateway: tuple[str, str], extra: str) -> None:
    url, key = pg_gateway
    body = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], ' + extra + "}"
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        r = c.post("/v1/jobs", content=body.encode(), headers={"Content-Type": "application/json"})
        again = c.post("/v1/chat/completions", content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and again.status_code == 400, (r.text, again.text)
    assert r.json()["error"]["code"] == "unsupported_value"


def test_a_message_batch_on_postgres(pg_gateway: tuple[str, str]) -> None:
    url, key = pg_gateway
    client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0)
    params = {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "on pg"}]}
    batch = client.messages.batches.create(requests=[{"custom_id": "pg-1", "params": params}])  # type: ignore[list-item]
    deadline = time.monotonic() + 60
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert [(r.custom_id, r.result.type) for r in client.messages.batches.results(batch.id)] == [("pg-1", "succeeded")]
    assert batch.id in {b.id for b in client.messages.batches.list()}
    with httpx.Client(base_url=url, headers={"x-api-key": key}, timeout=30) as c:
        nul = c.post("/v1/messages/batches", json={"requests": [{"custom_id": "n", "params": {**params, "x": "a\0b"}}]})
        cursor = c.get("/v1/messages/batches", params={"after_id": "a\0b"})
        unknown = c.get("/v1/messages/batches/a%00b")
    assert (nul.status_code, cursor.status_code, unknown.status_code) == (400, 400, 404)
