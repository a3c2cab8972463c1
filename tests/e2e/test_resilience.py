"""Failures make the gateway send less, not more: retries as re-admission, breakers, fallback, timeouts.

Each test injects faults into the simulator scoped to a model of its own (see gateway.test.yaml).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import httpx
import redis
from sqlalchemy import select

from shared.db.models import Attempt
from shared.db.session import session_scope
from shared.keys import Keys
from tests.conftest import ADMIN, PREFIX, REDIS_URL, Stack, wait_for_status


def _job(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}], **extra}


def _attempts(job_id: str) -> list[Attempt]:
    with session_scope(readonly=True) as db:
        return list(db.scalars(select(Attempt).where(Attempt.job_id == job_id).order_by(Attempt.number)))


def _breaker(stack: Stack, deployment: str) -> dict[str, Any]:
    return httpx.get(f"{stack.url}/v1/admin/budgets", headers=ADMIN).json()["breakers"][deployment]


def test_a_429_storm_is_retried_no_sooner_than_retry_after(stack: Stack, faults: Any) -> None:
    faults(kind="storm", model="gpt-storm", retry_after_s=1, duration_s=1.5)
    with stack.client() as c:
        job = c.post("/v1/jobs", json=_job("storm")).json()
        done = wait_for_status(c, job["id"], {"succeeded", "failed"})
    attempts = _attempts(job["id"])
    assert done["status"] == "succeeded"
    assert attempts[0].http_status == 429 and attempts[-1].status == "succeeded"
    for failed, retry in zip(attempts, attempts[1:], strict=False):
        assert failed.finished_at is not None and retry.started_at is not None
        assert (retry.started_at - failed.finished_at).total_seconds() >= 0.95  # honoured retry-after: 1


def test_a_500_burst_opens_the_breaker_fails_over_then_recovers(stack: Stack, faults: Any) -> None:
    faults(kind="error", status=500, model="gpt-flaky", duration_s=4)
    with stack.client() as c:
        during = [c.post("/v1/jobs", params={"wait": 30}, json=_job("flaky")).json() for _ in range(6)]
        assert all(j["status"] == "succeeded" for j in during)
        assert during[-1]["deployment"] == "claude-haiku@sim"  # served by the fallback, cross-provider
        assert _breaker(stack, "flaky@sim")["state"] in ("open", "half_open")
        time.sleep(4.5)  # the outage ends and open_s (2 s) passes: the next job is a half-open probe
        after = [c.post("/v1/jobs", params={"wait": 30}, json=_job("flaky")).json() for _ in range(3)]
    assert all(j["status"] == "succeeded" for j in after)
    assert after[-1]["deployment"] == "flaky@sim"
    assert _breaker(stack, "flaky@sim")["state"] == "closed"


def test_an_anthropic_request_falls_back_to_an_openai_deployment(stack: Stack, faults: Any) -> None:
    faults(kind="error", status=529, model="claude-flaky", duration_s=30)
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-flaky", max_tokens=16, system="Be brief.", messages=[{"role": "user", "content": "hi"}])
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text
    assert raw.headers["x-gateway-deployment"] == "gpt-4o-mini@sim"
    attempts = _attempts(raw.headers["x-gateway-job-id"])
    assert attempts[0].deployment == "claude-flaky@sim" and attempts[0].http_status == 529


def test_a_hung_provider_times_out_and_the_job_fails_with_the_reason(stack: Stack, faults: Any) -> None:
    faults(kind="hang", model="gpt-hang", hang_s=30)
    with stack.client() as c:
        job = c.post("/v1/jobs", json=_job("hang")).json()
        done = wait_for_status(c, job["id"], {"succeeded", "failed"}, timeout=60)
    assert done["status"] == "failed" and done["error"]["type"] == "timeout"
    attempts = _attempts(job["id"])
    assert len(attempts) == 4  # the attempt cap in gateway.test.yaml
    assert all(a.status == "failed" and (a.error or "").startswith("timeout") for a in attempts)  # ended, not hung


def test_a_provider_that_says_dont_retry_is_not_retried(stack: Stack) -> None:
    r = httpx.post(f"{stack.sim_url}/sim/limits", json={"model": "gpt-toobig", "rpm": 100000, "tpm": 100})
    assert r.status_code == 200
    with stack.client() as c:
        job = c.post("/v1/jobs", json=_job("toobig", max_tokens=500)).json()
        done = wait_for_status(c, job["id"], {"succeeded", "failed"})
    assert done["status"] == "failed"
    assert len(_attempts(job["id"])) == 1  # 429 "request too large" with x-should-retry: false


def test_no_caller_fails_while_a_fallback_can_serve(stack: Stack, faults: Any) -> None:
    """An outage of the primary longer than its breaker's open time: every call whose attempt on the
    primary fails (the burst before the breaker opens, and each half-open probe after) goes on to the
    fallback at once, without spending a retry budget (the fallback's is spent before the outage, so
    a retry that needed it would fail), so none of the callers sees an error."""
    _spend_retry_budget("claude-haiku@sim")
    faults(kind="outage", status=503, model="gpt-flaky", duration_s=6)
    with stack.client() as c, ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: c.post("/v1/chat/completions", json=_job("flaky")), range(16)))
        until = time.monotonic() + 7  # past two open periods (open_s: 2): the probes fail too
        while time.monotonic() < until:
            answers.append(c.post("/v1/chat/completions", json=_job("flaky")))
    assert [r.status_code for r in answers] == [200] * len(answers)
    failed_first = [r for r in answers if _attempts(r.headers["x-gateway-job-id"])[0].status == "failed"]
    assert failed_first
    assert all(r.headers["x-gateway-deployment"] == "claude-haiku@sim" for r in failed_first)


def _spend_retry_budget(deployment: str) -> None:
    """This minute's and the next few's retry budget of ``deployment``, all used up."""
    keys, r = Keys(PREFIX), redis.Redis.from_url(REDIS_URL)
    minute = int(time.time() // 60)
    for m in range(minute, minute + 3):
        r.set(keys.retry_counter(deployment, "ret", m), 10**6, ex=300)
