"""Dollar budgets through the real stack: a hard budget refuses a call before any provider call, in the
caller's dialect, naming the budget, the window, the spend and the reset; a batch job waits for the reset
when its deadline allows; racing callers on the api and the worker never overspend by more than one call's
worst case; a budget Redis forgot is rebuilt from the rollups; soft thresholds alert once each, signed."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis

from shared import pricing
from shared.config import DeploymentConfig
from tests.conftest import ADMIN, PREFIX, REDIS_URL, Stack, wait_for_status

PROMPT = [{"role": "user", "content": "Summarise the quarterly report in one line."}]
CHAT = {"model": "gpt-4o-mini", "max_tokens": 40, "messages": PROMPT}
GPT = DeploymentConfig(name="gpt-4o-mini@sim", provider="sim-openai", model="gpt-4o-mini")
WORST = pricing.worst_case_usd(GPT, "openai", 40, 40)  # prompt ~20 tokens: an upper bound of one call


def _tenant(stack: Stack, **settings: Any) -> tuple[str, str]:
    tenant = f"budget-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.url, headers=ADMIN, timeout=30) as c:
        assert c.post("/v1/admin/tenants", json={"id": tenant, **settings}).status_code == 201
        return tenant, c.post("/v1/admin/keys", json={"tenant": tenant}).json()["key"]


def _client(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def _spent(stack: Stack, tenant: str) -> float:
    report = httpx.get(f"{stack.url}/v1/usage", params={"tenant": tenant, "granularity": "hour"}, headers=ADMIN)
    return float(report.json()["totals"]["cost_usd"])


def _until_refused(c: httpx.Client, most: int = 40) -> tuple[int, httpx.Response]:
    for sent in range(most):
        r = c.post("/v1/chat/completions", json=CHAT)
        if r.status_code != 200:
            return sent, r
    raise AssertionError(f"{most} calls and no refusal")


def test_a_hard_budget_refuses_before_the_call_in_the_callers_dialect(stack: Stack) -> None:
    tenant, key = _tenant(stack, budget={"daily_usd": 6 * WORST})
    with _client(stack, key) as c:
        sent, refused = _until_refused(c)
        anthropic = c.post("/v1/messages", json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": PROMPT},
                           headers={"anthropic-version": "2023-06-01"})
    assert 4 <= sent <= 7
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
    midnight = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    for words in (f"tenant {tenant}'s daily budget", datetime.now(UTC).date().isoformat(), "spent",
                  f"resets at {midnight}T00:00:00+00:00"):
        assert words in error["message"], error["message"]
    assert 0 < int(refused.headers["retry-after"]) <= 86_400
    assert anthropic.status_code == 429 and anthropic.json()["type"] == "error"
    assert anthropic.json()["error"]["type"] == "rate_limit_error"
    assert _spent(stack, tenant) <= 6 * WORST


def test_a_batch_job_waits_for_the_reset_when_its_deadline_allows(stack: Stack) -> None:
    _, key = _tenant(stack, budget={"daily_usd": 2 * WORST})
    with _client(stack, key) as c:
        _until_refused(c)
        waits = c.post("/v1/jobs", json={**CHAT, "priority": "batch", "deadline": 3 * 86_400})
        too_soon = c.post("/v1/jobs", json={**CHAT, "priority": "batch", "deadline": 60})
        standard = c.post("/v1/jobs", json={**CHAT, "priority": "standard"})
        bulk = c.post("/v1/jobs/batch", json={"jobs": [{**CHAT, "priority": "batch", "deadline": 3 * 86_400},
                                                        {**CHAT, "priority": "standard"}]})
        time.sleep(1.0)  # scheduling rounds go by: it stays in its queue
        job = c.get(f"/v1/jobs/{waits.json()['id']}").json()
        c.delete(f"/v1/jobs/{job['id']}")
    assert waits.status_code == 202 and (job["status"], job["attempts"]) == ("queued", 0)
    assert too_soon.status_code == 429 and too_soon.json()["error"]["code"] == "insufficient_quota"
    assert "waits for it" in too_soon.json()["error"]["message"]
    assert standard.status_code == 429 and standard.json()["error"]["type"] == "insufficient_quota"
    assert bulk.status_code == 429 and bulk.json()["error"]["param"] == "jobs.1"


def test_a_batch_job_waiting_for_its_keys_budget_does_not_hold_up_the_tenants_other_keys(stack: Stack) -> None:
    tenant, _ = _tenant(stack)
    with httpx.Client(base_url=stack.url, headers=ADMIN, timeout=30) as c:
        spent = c.post("/v1/admin/keys", json={"tenant": tenant, "budget": {"daily_usd": 2 * WORST}}).json()["key"]
        other = c.post("/v1/admin/keys", json={"tenant": tenant}).json()["key"]
    with _client(stack, spent) as c:
        _until_refused(c)
        waiting = c.post("/v1/jobs", json={**CHAT, "priority": "batch", "deadline": 3 * 86_400}).json()
    with _client(stack, other) as c:
        behind = c.post("/v1/jobs", json={**CHAT, "priority": "batch"}).json()
        done = wait_for_status(c, behind["id"], {"succeeded", "failed"}, timeout=30)
        parked = c.get(f"/v1/jobs/{waiting['id']}").json()
        c.delete(f"/v1/jobs/{waiting['id']}")
    assert done["status"] == "succeeded"
    assert (parked["status"], parked["attempts"]) == ("queued", 0)  # parked until the reset


def test_racing_callers_on_the_api_and_the_worker_never_overspend_by_more_than_one_worst_case(stack: Stack) -> None:
    limit = 12 * WORST
    tenant, key = _tenant(stack, budget={"daily_usd": limit})

    def call(i: int) -> str:
        with _client(stack, key) as c:
            if i % 2:  # the api sends these itself (fast lane)
                return str(c.post("/v1/chat/completions", json=CHAT).status_code)
            r = c.post("/v1/jobs", params={"wait": 30}, json={**CHAT, "priority": "standard"})  # a worker sends
            return r.json().get("status", str(r.status_code)) if r.status_code < 300 else str(r.status_code)

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(call, range(48)))
    assert any(o in ("200", "succeeded") for o in outcomes) and "429" in outcomes
    assert _spent(stack, tenant) <= limit + WORST


def test_a_budget_redis_forgot_is_rebuilt_from_the_rollups(stack: Stack) -> None:
    tenant, key = _tenant(stack, budget={"daily_usd": 3 * WORST})
    r = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    with _client(stack, key) as c:
        _until_refused(c)
        spend_keys = list(r.scan_iter(match=f"{{{PREFIX}}}:spend:tenant:{tenant}:*"))
        assert spend_keys
        r.delete(*spend_keys)  # Redis lost them (restarted empty)
        again = c.post("/v1/chat/completions", json=CHAT)
    assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota"
    [rebuilt] = [k for k in r.scan_iter(match=f"{{{PREFIX}}}:spend:tenant:{tenant}:day:*") if ":alerted:" not in k]
    assert float(r.hget(rebuilt, "settled") or 0) == pytest.approx(_spent(stack, tenant), abs=1e-9)


def test_a_key_budget_and_a_feature_budget_hold_on_their_own(stack: Stack) -> None:
    tenant, _ = _tenant(stack, features={"search": {"budget": {"daily_usd": 2 * WORST}}})
    with httpx.Client(base_url=stack.url, headers=ADMIN, timeout=30) as c:
        key = c.post("/v1/admin/keys", json={"tenant": tenant, "budget": {"daily_usd": 3 * WORST}}).json()
    with _client(stack, key["key"]) as c:
        search = [c.post("/v1/chat/completions", json=CHAT, headers={"X-Gateway-Feature": "search"})
                  for _ in range(4)]
        others = [c.post("/v1/chat/completions", json=CHAT) for _ in range(4)]
    assert [r.status_code for r in search].count(200) <= 2 and search[-1].status_code == 429
    assert "feature search" in search[-1].json()["error"]["message"]
    assert others[0].status_code == 200 and others[-1].status_code == 429
    assert f"key {key['id']}" in others[-1].json()["error"]["message"]


def test_soft_thresholds_alert_once_each_with_a_signed_webhook(stack: Stack) -> None:
    limit = 4 * WORST
    tenant, key = _tenant(stack, budget={"daily_usd": limit, "enforce": "soft"})
    httpx.put(f"{stack.sim_url}/sim/webhooks/config", json={"fail_next": 1})  # the receiver fails once: retried
    with _client(stack, key) as c:
        codes = [c.post("/v1/chat/completions", json=CHAT).status_code for _ in range(7)]
    assert codes == [200] * 7  # soft: never refused
    alerts = _alerts_for(stack, tenant, want=3)
    assert sorted(a["threshold"] for a, _ in alerts) == [0.5, 0.8, 1.0]
    for body, headers in alerts:
        t, v1 = (part.split("=", 1)[1] for part in headers["x-gateway-signature"].split(","))
        expected = hmac.new(b"whsec-tests", f"{t}.".encode() + body["raw"].encode(), hashlib.sha256).hexdigest()
        assert hmac.compare_digest(v1, expected)
        assert body["budget"]["window"] == "day" and body["budget"]["limit_usd"] == pytest.approx(limit)
    metrics = httpx.get(f"{stack.url}/metrics", headers=ADMIN).text
    assert 'gateway_budget_alerts_total{level="tenant",threshold="0.5",window="day"}' in metrics


def _alerts_for(stack: Stack, tenant: str, want: int) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """The webhooks the simulator received about ``tenant``: they are sent from a background thread, so
    poll for a few seconds until ``want`` of them are there."""
    found: list[tuple[dict[str, Any], dict[str, str]]] = []
    deadline = time.monotonic() + 10
    while len(found) < want and time.monotonic() < deadline:
        time.sleep(0.1)
        received = httpx.get(f"{stack.sim_url}/sim/webhooks", timeout=10).json()["received"]
        found = [({**json.loads(w["body"]), "raw": w["body"]}, w["headers"]) for w in received
                 if json.loads(w["body"])["budget"]["tenant"] == tenant]
    return found
