"""Bulk submission, ``POST /v1/jobs/batch``: many jobs per request, all or nothing, through the real stack."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from sqlalchemy import func, select
from starlette.requests import Request
from starlette.testclient import TestClient

from api.gateway import Gateway
from api.limits import BodyGuard
from cli.main import celery_dispatch
from shared.config import get_settings
from shared.db.models import Attempt
from shared.db.session import session_scope
from shared.errors import Unavailable
from shared.schemas import JobRequest
from tests.conftest import Stack, hold_leader_lease, wait_for_status

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise this."}], "max_tokens": 16}


def unique(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def jobs_of(client: httpx.Client, feature: str) -> list[dict[str, Any]]:
    return client.get("/v1/jobs", params={"feature": feature, "limit": 500}).json()["data"]  # type: ignore[no-any-return]


def test_a_batch_of_50_is_queued_in_input_order_and_every_job_succeeds(stack: Stack) -> None:
    feature = unique("nightly")
    lanes = ["batch" if i % 10 == 0 else "interactive" if i % 10 == 1 else "standard" for i in range(50)]
    items = [{**CHAT, "feature": feature, "priority": lane, "task": f"t{i}"} for i, lane in enumerate(lanes)]
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        assert r.status_code == 202, r.text
        body = r.json()
        done = [wait_for_status(c, job["id"], {"succeeded", "failed"}) for job in body["data"]]
    assert body["object"] == "list" and r.headers["x-gateway-jobs-created"] == "50"
    ids = [job["id"] for job in body["data"]]
    assert [job["task"] for job in body["data"]] == [f"t{i}" for i in range(50)]
    assert ids == sorted(ids) and len(set(ids)) == 50  # ids are time-ordered: input order
    assert [job["priority"] for job in body["data"]] == lanes
    assert {job["status"] for job in body["data"]} == {"queued"}  # even interactive: no inline admission
    assert [job["id"] for job in done] == ids
    assert all(job["status"] == "succeeded" for job in done), [j["error"] for j in done if j["error"]]
    assert all(job["usage"]["prompt_tokens"] > 0 and job["usage"]["completion_tokens"] > 0 for job in done)
    assert all(job["cost_usd"] > 0 for job in done)


@pytest.mark.parametrize(("index", "bad", "param", "code"), [
    (3, {"messages": []}, "jobs.3.messages", None),
    (0, {"messages": [{"role": "wizard", "content": "x"}]}, "jobs.0.messages.0.role", None),
    (2, {"model": "no-such-model"}, "jobs.2.model", "model_not_found"),
    (1, {"model": "tiny", "max_tokens": 5000}, "jobs.1.max_tokens", "job_too_large"),
    (4, {"deadline": -5}, "jobs.4.deadline", None),
    (4, {"priority": "urgent"}, "jobs.4.priority", None),
])
def test_one_bad_item_refuses_the_whole_batch_and_names_it(stack: Stack, index: int, bad: dict[str, Any],
                                                           param: str, code: str | None) -> None:
    feature = unique("refused")
    items = [{**CHAT, "feature": feature} for _ in range(5)]
    items[index] = {**items[index], **bad}
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        stored = jobs_of(c, feature)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]
    assert error["code"] == code
    assert stored == []


@pytest.mark.parametrize(("body", "param", "needle"), [
    ({"jobs": []}, "jobs", "at least 1"),
    ({"jobs": [CHAT] * 1001}, "jobs", "at most 1000 jobs"),
    ({"jobs": CHAT}, "jobs", "valid array"),
    ({"job": [CHAT]}, "jobs", "Field required"),
])
def test_a_malformed_batch_is_a_400(stack: Stack, body: dict[str, Any], param: str, needle: str) -> None:
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and needle in r.json()["error"]["message"]


def test_a_body_that_is_not_json_is_a_400(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", content=b'{"jobs": [', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]


def test_a_key_used_twice_in_one_batch_is_a_400_and_nothing_is_written(stack: Stack) -> None:
    feature = unique("twice")
    keys = ["a", "b", "a"]
    items = [{**CHAT, "feature": feature, "idempotency_key": unique(k) if k != "a" else f"{feature}-a"}
             for k in keys]
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        stored = jobs_of(c, feature)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "jobs.2.idempotency_key" and "jobs.0" in r.json()["error"]["message"]
    assert stored == []


def test_repeating_a_batch_with_keys_returns_the_same_jobs_and_creates_none(stack: Stack) -> None:
    feature = unique("again")
    items = [{**CHAT, "feature": feature, "idempotency_key": f"{feature}-{i}"} for i in range(5)]
    with stack.client() as c:
        single = c.post("/v1/jobs", json=items[4])  # a key the single-job path used first
        first = c.post("/v1/jobs/batch", json={"jobs": items})
        second = c.post("/v1/jobs/batch", json={"jobs": items})
        stored = jobs_of(c, feature)
    assert single.status_code == 202 and first.status_code == 202 and second.status_code == 202
    assert first.headers["x-gateway-jobs-created"] == "4" and second.headers["x-gateway-jobs-created"] == "0"
    ids = [job["id"] for job in first.json()["data"]]
    assert [job["id"] for job in second.json()["data"]] == ids
    assert ids[4] == single.json()["id"]
    assert len(stored) == 5


def test_a_key_reused_for_another_request_is_a_409_naming_the_item(stack: Stack) -> None:
    feature = unique("reused")
    with stack.client() as c:
        c.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "feature": feature, "idempotency_key": feature}]})
        r = c.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "feature": feature},
                                                    {**CHAT, "feature": feature, "idempotency_key": feature,
                                                     "max_tokens": 99}]})
        stored = jobs_of(c, feature)
    assert r.status_code == 409 and r.json()["error"]["param"] == "jobs.1.idempotency_key"
    assert len(stored) == 1


def test_a_key_reused_in_a_later_chunk_still_refuses_the_whole_batch(stack: Stack) -> None:
    """A large batch is written in chunks (16, then 64, ...); a conflict deep in it is found before
    anything is written, so the batch stays all or nothing."""
    feature = unique("late-reuse")
    with stack.client() as c:
        c.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "feature": feature, "idempotency_key": feature}]})
        items = [{**CHAT, "feature": feature} for _ in range(120)]
        items[110] = {**CHAT, "feature": feature, "idempotency_key": feature, "max_tokens": 99}
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        stored = jobs_of(c, feature)
    assert r.status_code == 409 and r.json()["error"]["param"] == "jobs.110.idempotency_key"
    assert len(stored) == 1


def test_a_batch_over_several_chunks_keeps_its_order_and_every_job_runs(stack: Stack) -> None:
    feature = unique("chunks")
    items = [{**CHAT, "feature": feature, "idempotency_key": f"{feature}-{i}"} for i in range(100)]  # standard lane
    with stack.client() as c:
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        ids = [job["id"] for job in r.json()["data"]]
        again = c.post("/v1/jobs/batch", json={"jobs": items})
        waited = c.get("/v1/jobs", params={"ids": ",".join(ids), "wait": 60})
        assert waited.status_code == 200, waited.text
        done = waited.json()["data"]
    assert r.status_code == 202 and r.headers["x-gateway-jobs-created"] == "100"
    assert [job["idempotency_key"] for job in r.json()["data"]] == [item["idempotency_key"] for item in items]
    assert [job["id"] for job in again.json()["data"]] == ids and again.headers["x-gateway-jobs-created"] == "0"
    assert {job["status"] for job in done} == {"succeeded"}


def test_a_batch_over_the_queue_cap_is_a_429_and_nothing_is_queued(stack: Stack) -> None:
    """tests/gateway.test.yaml caps each tenant's batch lane at 20 waiting jobs."""
    fits, overflow, rest = unique("fits"), unique("overflow"), unique("rest")

    def batch(feature: str, n: int) -> dict[str, Any]:
        return {"jobs": [{**CHAT, "feature": feature, "priority": "batch"} for _ in range(n)]}

    with hold_leader_lease(), stack.client("globex") as c:
        first = c.post("/v1/jobs/batch", json=batch(fits, 15))
        refused = c.post("/v1/jobs/batch", json=batch(overflow, 6))
        last = c.post("/v1/jobs/batch", json=batch(rest, 5))  # exactly up to the cap
        queued_after_refusal = jobs_of(c, overflow)
    assert first.status_code == 202 and last.status_code == 202
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["code"] == "queue_full" and "15" in error["message"] and "6" in error["message"]
    assert int(refused.headers["retry-after"]) >= 1
    assert queued_after_refusal == []
    with stack.client("globex") as c:  # once the scheduler is back, every accepted job runs
        for job in first.json()["data"] + last.json()["data"]:
            assert wait_for_status(c, job["id"], {"succeeded", "failed"})["status"] == "succeeded"


def test_the_batch_own_jobs_count_as_work_ahead_for_the_deadline(stack: Stack) -> None:
    """gpt-tiny admits ~22 tokens/s to the batch lane: three 400-token jobs ahead take about a minute."""
    feature = unique("late")
    items = [{"model": "tiny", "max_tokens": 400, "priority": "batch", "feature": feature,
              "messages": [{"role": "user", "content": "hello"}]} for _ in range(4)]
    items[3]["deadline"] = 5
    with hold_leader_lease(), stack.client("globex") as c:
        r = c.post("/v1/jobs/batch", json={"jobs": items})
        stored = jobs_of(c, feature)
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "deadline_unreachable" and r.json()["error"]["param"] == "jobs.3"
    assert stored == []


def test_tenants_cannot_see_each_others_batch_jobs(stack: Stack) -> None:
    feature = unique("secret")
    with stack.client("acme") as acme, stack.client("globex") as globex:
        r = acme.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "feature": feature}] * 2})
        ids = [job["id"] for job in r.json()["data"]]
        assert all(job["tenant"] == "acme" for job in r.json()["data"])
        assert all(globex.get(f"/v1/jobs/{job_id}").status_code == 404 for job_id in ids)
        assert jobs_of(globex, feature) == []
        assert all(acme.get(f"/v1/jobs/{job_id}").status_code == 200 for job_id in ids)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer gw-not-a-key"}])
def test_a_missing_or_wrong_key_is_a_401(stack: Stack, headers: dict[str, str]) -> None:
    r = httpx.post(f"{stack.url}/v1/jobs/batch", json={"jobs": [CHAT]}, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_a_batch_body_may_be_larger_than_a_single_jobs(stack: Stack) -> None:
    """The 4 MiB body limit of every other route would refuse this; the batch route reads it."""
    big = "x" * (5 * 1024 * 1024)
    item = {"model": "no-such-model", "messages": [{"role": "user", "content": big}]}
    with stack.client() as c:
        single = c.post("/v1/jobs", json=item)
        batch = c.post("/v1/jobs/batch", json={"jobs": [item]})
    assert single.status_code == 413
    assert batch.status_code == 400 and batch.json()["error"]["param"] == "jobs.0.model"


def test_when_redis_refuses_the_batch_after_the_commit_every_job_fails_with_the_reason(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    feature = unique("no-redis")
    gateway = Gateway(get_settings(), celery_dispatch(get_settings()))

    def refuse(envs: object) -> None:
        raise redis.ConnectionError("Redis went away")

    monkeypatch.setattr(gateway.queues, "push_many", refuse)
    items = [JobRequest.model_validate({**CHAT, "feature": feature}) for _ in range(3)]
    with pytest.raises(Unavailable):
        gateway.bulk.submit_many(gateway.auth.check(stack.keys["acme"], "tests"), items)
    with stack.client() as c:
        stored = jobs_of(c, feature)
    assert len(stored) == 3
    assert all(job["status"] == "failed" and job["error"]["type"] == "queue_unavailable" for job in stored)


def test_the_body_limit_counts_streamed_bodies_per_path() -> None:
    app = FastAPI()

    @app.post("/{path:path}")
    async def read_all(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(len(await request.body())))

    def chunks(n: int) -> Any:
        yield from (b"x" * 10 for _ in range(n))

    app.add_middleware(BodyGuard, max_bytes=50, batch_max_bytes=200)  # as api/app.py adds it
    with TestClient(app) as client:
        assert client.post("/v1/jobs", content=chunks(6)).status_code == 413
        assert client.post("/v1/jobs/batch", content=chunks(6)).text == "60"
        refused = client.post("/v1/jobs/batch", content=chunks(21))
    assert refused.status_code == 413 and "200 bytes" in refused.json()["error"]["message"]


def test_a_backlog_admitted_in_one_round_runs_once_per_job(stack: Stack) -> None:
    """Queued while the scheduler is away, 40 jobs are admitted together and sent 16 to a Celery
    message: each ends succeeded with exactly one attempt, recorded and billed once."""
    feature = unique("round")
    with hold_leader_lease(), stack.client() as c:
        r = c.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "feature": feature, "priority": "standard",
                                                     "messages": [{"role": "user", "content": f"doc {i}"}]}
                                                    for i in range(40)]})
        assert r.status_code == 202
        assert {j["status"] for j in jobs_of(c, feature)} == {"queued"}
    with stack.client() as c:
        done = [wait_for_status(c, view["id"], {"succeeded", "failed"}) for view in r.json()["data"]]
    assert [j["status"] for j in done] == ["succeeded"] * 40
    assert all(j["attempts"] == 1 and j["cost_usd"] > 0 for j in done)
    with session_scope(readonly=True) as db:
        counts = db.execute(select(Attempt.job_id, func.count()).where(
            Attempt.job_id.in_([j["id"] for j in done])).group_by(Attempt.job_id)).all()
    assert sorted(n for _, n in counts) == [1] * 40
