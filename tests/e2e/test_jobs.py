"""The native jobs API: async and sync jobs, idempotency, cancel, pagination, tenant isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from sqlalchemy import update

from shared.config import get_settings
from shared.db import retention
from shared.db.models import Job, utcnow
from shared.db.session import session_scope
from shared.db.tenants import create_key, list_keys, revoke_key
from shared.keys import Keys
from tests.conftest import EPOCH, PREFIX, REDIS_URL, Stack, hold_leader_lease, wait_for_status

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise this."}], "max_tokens": 16}


def test_async_job_is_accepted_then_succeeds_with_usage_and_cost(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/jobs", json={**CHAT, "feature": "summarizer", "priority": "batch"})
        assert r.status_code == 202
        job = r.json()
        assert job["status"] in ("queued", "admitted", "running", "succeeded")
        done = wait_for_status(c, job["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["priority"] == "batch" and done["feature"] == "summarizer"
    assert done["result"]["choices"][0]["message"]["content"]
    assert done["usage"]["prompt_tokens"] > 0 and done["usage"]["completion_tokens"] > 0
    assert done["cost_usd"] > 0
    assert done["deployment"] == "gpt-4o-mini@sim"
    assert done["queued_ms"] is not None and done["queued_ms"] >= 0


def test_wait_returns_the_finished_job_in_one_call(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/jobs", params={"wait": 20}, json={**CHAT, "priority": "standard"})
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"
    assert r.headers["x-gateway-job-id"] == r.json()["id"]


def test_price_override_from_config_is_used(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", params={"wait": 20}, json={**CHAT, "model": "gpt-4o"}).json()
    usage = job["usage"]
    expected = (usage["prompt_tokens"] * 2.5 + usage["completion_tokens"] * 10) / 1_000_000
    assert job["cost_usd"] == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("where", ["body", "header"])
def test_idempotency_key_returns_the_same_job(stack: Stack, where: str) -> None:
    key = f"idem-{uuid.uuid4().hex}"
    body = {**CHAT, "idempotency_key": key} if where == "body" else CHAT
    headers = {"Idempotency-Key": key} if where == "header" else {}
    with stack.client() as c:
        first = c.post("/v1/jobs", json=body, headers=headers)
        second = c.post("/v1/jobs", json=body, headers=headers)
        third = c.post("/v1/jobs", params={"wait": 20}, json=body, headers=headers)
    assert first.status_code == 202
    assert second.json()["id"] == first.json()["id"] == third.json()["id"]


@pytest.fixture
def paused_scheduler() -> Iterator[None]:
    """Hold the leader lease under another name: the real scheduler stands by, nothing is admitted."""
    with hold_leader_lease():
        yield


def test_cancel_a_queued_job_and_it_is_never_sent(stack: Stack, paused_scheduler: None) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", json={**CHAT, "priority": "batch"}).json()
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "queued"
        cancelled = c.delete(f"/v1/jobs/{job['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        again = c.delete(f"/v1/jobs/{job['id']}")
    assert again.status_code == 409
    assert "cancelled" in again.json()["error"]["message"]


def test_cancelled_job_stays_cancelled_after_the_scheduler_resumes(stack: Stack) -> None:
    r = redis.Redis.from_url(REDIS_URL)
    key = Keys(PREFIX).leader
    r.delete(key)
    r.set(key, "test-holds-the-lease", px=60_000)
    with stack.client() as c:
        job = c.post("/v1/jobs", json={**CHAT, "priority": "batch"}).json()
        c.delete(f"/v1/jobs/{job['id']}")
        assert r.sismember(Keys(PREFIX).cancelled, job["id"])  # the scheduler will drop it from the queue's head
        other = c.post("/v1/jobs", json={**CHAT, "priority": "batch"}).json()
        r.delete(key)  # the scheduler takes the lease back and drains the queue
        wait_for_status(c, other["id"], {"succeeded"})
        assert c.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    assert not r.sismember(Keys(PREFIX).cancelled, job["id"])  # dropped unsent, and forgotten


def test_cancel_a_finished_job_is_a_conflict(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", params={"wait": 20}, json=CHAT).json()
        r = c.delete(f"/v1/jobs/{job['id']}")
    assert r.status_code == 409
    assert "succeeded" in r.json()["error"]["message"]


def test_listing_pages_through_every_job_once_and_filters(stack: Stack) -> None:
    feature = f"pages-{uuid.uuid4().hex[:8]}"
    with stack.client("globex") as c:
        ids = {c.post("/v1/jobs", json={**CHAT, "feature": feature}).json()["id"] for _ in range(7)}
        seen: list[str] = []
        cursor = None
        while True:
            params = {"feature": feature, "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/jobs", params=params).json()
            assert len(page["data"]) <= 3
            seen += [j["id"] for j in page["data"]]
            if not page["has_more"]:
                break
            cursor = page["next_cursor"]
        for job_id in ids:
            wait_for_status(c, job_id, {"succeeded"})
        done = c.get("/v1/jobs", params={"feature": feature, "status": "succeeded", "limit": 50}).json()
        bad = c.get("/v1/jobs", params={"status": "sleeping"})
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    assert seen == sorted(seen, reverse=True)  # newest first
    assert {j["id"] for j in done["data"]} == ids
    assert bad.status_code == 400


def test_tenants_cannot_see_each_others_jobs(stack: Stack) -> None:
    feature = f"secret-{uuid.uuid4().hex[:8]}"
    with stack.client("acme") as acme, stack.client("globex") as globex:
        job = acme.post("/v1/jobs", json={**CHAT, "feature": feature}).json()
        assert globex.get(f"/v1/jobs/{job['id']}").status_code == 404
        assert globex.delete(f"/v1/jobs/{job['id']}").status_code == 404
        listing = globex.get("/v1/jobs", params={"feature": feature}).json()
        assert listing["data"] == []
        assert acme.get(f"/v1/jobs/{job['id']}").status_code == 200


def test_a_revoked_key_is_refused_at_once(stack: Stack) -> None:
    with session_scope() as db:
        _, plaintext = create_key(db, "acme", name="short-lived")
    with stack.client() as c:
        ok = c.get("/v1/jobs", headers={"Authorization": f"Bearer {plaintext}"})
        assert ok.status_code == 200
        with session_scope() as db:
            key = next(k for k in list_keys(db, "acme") if plaintext.startswith(k.prefix) and k.name == "short-lived")
            revoke_key(db, key.prefix, EPOCH)
        refused = c.get("/v1/jobs", headers={"Authorization": f"Bearer {plaintext}"})
    assert refused.status_code == 401
    assert refused.json()["error"]["type"] == "authentication_error"


def test_a_job_whose_content_retention_dropped_still_renders(stack: Stack) -> None:
    """Retention blanks ``request`` and ``result`` of old finished jobs; the job's page keeps the billing."""
    with stack.client() as c:
        done = c.post("/v1/jobs", params={"wait": 20}, json=CHAT).json()
        assert done["status"] == "succeeded" and done["result"]
        with session_scope() as db:  # as if it had finished 40 days ago
            db.execute(update(Job).where(Job.id == done["id"]).values(finished_at=utcnow() - timedelta(days=40)))
        assert retention.purge(get_settings().retention).blanked >= 0  # the scheduler may have done it first
        r = c.get(f"/v1/jobs/{done['id']}")
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["status"] == "succeeded" and view["result"] is None
    assert view["usage"] == done["usage"] and view["cost_usd"] == done["cost_usd"]
    with session_scope(readonly=True) as db:
        assert db.get(Job, done["id"]).request is None
