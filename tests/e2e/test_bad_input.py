"""Every mistake a caller can make gets a clear 4xx in OpenAI's format, and no job half-written."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Stack, wait_for_status

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def _count_jobs(stack: Stack) -> int:
    from sqlalchemy import func, select

    from shared.db.models import Job
    from shared.db.session import session_scope

    with session_scope() as db:
        return int(db.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(("body", "status", "needle"), [
    (b'{"model": "gpt-4o-mini", "messages": [', 400, "not valid JSON"),
    (b'{"model": "gpt-4o-mini"}', 400, "messages"),
    (b'{"model": "gpt-4o-mini", "messages": []}', 400, "messages"),
    (b'{"messages": [{"role": "user", "content": "hi"}]}', 400, "model"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "hi"}]}', 400, "role"),
    (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}]}', 400, "content"),
    (b'{"model": "gpt-4o-mini", "messages": "hello"}', 400, "messages"),
    (b'{"model": "gpt-4o-mini", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}',
     400, "temperature"),
    (b'{"model": "gpt-4o-mini", "max_tokens": -5, "messages": [{"role": "user", "content": "x"}]}',
     400, "max_tokens"),
    (b'{"model": "unknown-model", "messages": [{"role": "user", "content": "x"}]}', 404, "unknown-model"),
    (b'[1, 2, 3]', 400, "Invalid request"),
])
def test_bad_chat_requests_get_a_clear_4xx(stack: Stack, body: bytes, status: int, needle: str) -> None:
    before = _count_jobs(stack)
    with stack.client() as c:
        r = c.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert needle in error["message"]
    assert error["type"] == "invalid_request_error"
    assert _count_jobs(stack) == before


def test_unknown_priority_header_is_a_400_that_lists_the_choices(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=GOOD, headers={"X-Gateway-Priority": "urgent"})
    assert r.status_code == 400
    assert "interactive" in r.json()["error"]["message"]


def test_unknown_priority_in_a_job_is_a_400(stack: Stack) -> None:
    with stack.client() as c:
        r = c.post("/v1/jobs", json={**GOOD, "priority": "urgent"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "priority"


def test_oversized_body_is_a_413(stack: Stack) -> None:
    huge = {**GOOD, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=huge)
    assert r.status_code == 413
    assert "limit" in r.json()["error"]["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer gw-not-a-key"}, {"Authorization": "Basic abc"}])
def test_missing_or_bad_key_is_a_401(stack: Stack, headers: dict[str, str]) -> None:
    r = httpx.post(f"{stack.url}/v1/chat/completions", json=GOOD, headers=headers)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"


def test_a_provider_returning_garbage_fails_the_job_with_a_reason(stack: Stack) -> None:
    fault = httpx.post(f"{stack.sim_url}/sim/faults", json={"kind": "malformed", "model": "gpt-garbage"})
    assert fault.status_code in (200, 201), fault.text
    with stack.client() as c:
        sync = c.post("/v1/chat/completions", json={**GOOD, "model": "garbage"})
        job = c.post("/v1/jobs", json={**GOOD, "model": "garbage"}).json()
        done = wait_for_status(c, job["id"], {"failed", "succeeded"})
    assert sync.status_code == 502
    assert "malformed" in sync.json()["error"]["message"]
    assert done["status"] == "failed"
    assert done["error"]["type"] == "malformed"
    assert sync.headers.get("x-gateway-job-id") is None or sync.headers["x-gateway-job-id"]
