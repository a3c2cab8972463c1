"""Anthropic's Message Batches API through the real gateway with the official SDK: each request a job in
the batch lane in Anthropic's dialect (an Anthropic deployment receives its params exactly as written),
results in Anthropic's form by custom_id, cancel, paging, tenant isolation, and Anthropic-format 4xx for bad
batches before anything is written."""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import httpx
import pytest
from sqlalchemy import func, select

from shared.db.models import Batch, Job
from shared.db.session import session_scope
from shared.db.tenants import create_key, ensure_tenant
from tests.conftest import Stack, hold_leader_lease
from tests.e2e.test_fidelity import received


def _anthropic(stack: Stack, tenant: str = "acme", key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=key or stack.keys[tenant], max_retries=0)


def _request(custom_id: str, model: str = "capture-claude", **params: Any) -> dict[str, Any]:
    ask = f"{custom_id} {uuid.uuid4()}"
    return {"custom_id": custom_id,
            "params": {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": ask}], **params}}


def _ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while (batch := client.messages.batches.retrieve(batch_id)).processing_status != "ended":
        assert time.monotonic() < deadline, f"message batch {batch_id} stayed {batch.processing_status}"
        time.sleep(0.2)
    return batch


def _results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {line.custom_id: line.result for line in client.messages.batches.results(batch_id)}


def _own_tenant() -> tuple[str, str]:
    """A tenant of its own (its queue holds up no one else's), and its key."""
    tenant = f"msgb-{uuid.uuid4().hex[:8]}"
    with session_scope() as db:
        ensure_tenant(db, tenant)
        return tenant, create_key(db, tenant, name="tests")[1]


def test_a_message_batch_runs_each_request_as_written_and_answers_in_anthropic_form(stack: Stack) -> None:
    client = _anthropic(stack)
    marker = f"msgbatch {uuid.uuid4().hex}"
    exact: dict[str, Any] = {  # same dialect: every field reaches the provider as written
        "model": "capture-claude", "max_tokens": 24, "top_k": 5, "a_future_option": {"x": [1, 2]},
        "system": [{"type": "text", "text": "Stable instruction. " * 10, "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": marker,
                                                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]}
    requests = [{"custom_id": "exact", "params": exact}, _request("across", model="gpt-4o-mini"),
                *[_request(f"ok-{i}") for i in range(3)]]
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status in ("in_progress", "ended") and batch.request_counts.processing + \
        batch.request_counts.succeeded == 5
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600
    done = _ended(client, batch.id)
    assert done.request_counts.succeeded == 5 and done.ended_at is not None and done.results_url
    results = _results(client, batch.id)
    assert sorted(results) == sorted(r["custom_id"] for r in requests)
    assert all(r.type == "succeeded" and r.message.type == "message" and r.message.content for r in results.values())
    assert results["across"].message.model == "gpt-4o-mini"  # an OpenAI answer, translated
    assert received(stack, marker) == {**exact, "model": "claude-capture"}
    with session_scope() as db:
        jobs = {j.custom_id: j for j in db.scalars(select(Job).where(Job.batch_id == batch.id))}
    assert {j.lane for j in jobs.values()} == {"batch"} and {j.dialect for j in jobs.values()} == {"anthropic"}
    assert jobs["exact"].idempotency_key == f"{batch.id}:exact"


def test_list_pages_newest_first_and_cancel_stops_what_is_not_yet_sent(stack: Stack) -> None:
    _, key = _own_tenant()
    client = _anthropic(stack, key=key)
    # batch-slow's 2,000 TPM admits one such request at a time: the others wait in the queue
    slow = client.messages.batches.create(requests=[  # type: ignore[list-item]
        _request(f"slow-{i}", model="batch-slow", max_tokens=1200) for i in range(5)])
    newer = client.messages.batches.create(requests=[_request("one")])  # type: ignore[list-item]
    first = client.messages.batches.list(limit=1)
    assert [b.id for b in first.data] == [newer.id] and first.has_more
    assert [b.id for b in client.messages.batches.list(limit=1, after_id=newer.id).data] == [slow.id]
    assert [b.id for b in client.messages.batches.list(limit=5, before_id=slow.id).data] == [newer.id]
    assert [b.id for b in client.messages.batches.list(limit=1)] == [newer.id, slow.id]  # the SDK pages on
    canceling = client.messages.batches.cancel(slow.id)
    assert canceling.processing_status in ("canceling", "ended") and canceling.cancel_initiated_at is not None
    done = _ended(client, slow.id)
    counts = done.request_counts
    assert counts.canceled >= 1 and counts.succeeded + counts.canceled == 5 and counts.processing == 0
    results = _results(client, slow.id)
    assert sorted(results) == [f"slow-{i}" for i in range(5)]
    assert {r.type for r in results.values()} <= {"succeeded", "canceled"}
    assert sum(r.type == "canceled" for r in results.values()) == counts.canceled


def test_message_batches_are_the_tenants_own(stack: Stack) -> None:
    acme, globex = _anthropic(stack), _anthropic(stack, "globex")
    batch = acme.messages.batches.create(requests=[_request("mine")])  # type: ignore[list-item]
    for call in (globex.messages.batches.retrieve, globex.messages.batches.cancel, globex.messages.batches.results):
        with pytest.raises(anthropic.NotFoundError):
            call(batch.id)
    assert batch.id not in {b.id for b in globex.messages.batches.list()}
    assert batch.id in {b.id for b in acme.messages.batches.list()}
    with stack.client() as c:  # not an OpenAI batch either
        assert c.get(f"/v1/batches/{batch.id}").status_code == 404
        assert batch.id not in {b["id"] for b in c.get("/v1/batches").json()["data"]}
    _ended(acme, batch.id)


def test_results_wait_for_the_end_and_a_cancelled_batch_ends_at_once(stack: Stack) -> None:
    _, key = _own_tenant()
    client = _anthropic(stack, key=key)
    with hold_leader_lease():  # nothing is admitted meanwhile: the requests wait in their queue
        batch = client.messages.batches.create(requests=[_request(f"w-{i}") for i in range(3)])  # type: ignore[list-item]
        assert client.messages.batches.retrieve(batch.id).results_url is None
        early = httpx.get(f"{stack.url}/v1/messages/batches/{batch.id}/results", headers={"x-api-key": key})
        assert early.status_code == 409 and early.json()["type"] == "error"
        with pytest.raises(anthropic.AnthropicError):  # the SDK finds no results_url
            client.messages.batches.results(batch.id)
        client.messages.batches.cancel(batch.id)
        done = _ended(client, batch.id)
    assert done.request_counts.canceled == 3 and done.results_url
    assert {custom_id: r.type for custom_id, r in _results(client, batch.id).items()} == {
        "w-0": "canceled", "w-1": "canceled", "w-2": "canceled"}


def _refused(stack: Stack, body: Any, key: str | None = None) -> tuple[int, dict[str, Any]]:
    r = httpx.post(f"{stack.url}/v1/messages/batches", json=body,
                   headers={"x-api-key": key or stack.keys["acme"], "anthropic-version": "2023-06-01"})
    return r.status_code, r.json()


def test_bad_batches_get_anthropic_errors_before_anything_is_written(stack: Stack) -> None:
    with session_scope() as db:
        before = db.scalar(select(func.count()).select_from(Batch))
        key, claude_only = create_key(db, "acme", name="claude-only")
        key.allowed_models = ["capture-claude"]
    cases = {
        "duplicate custom_id": ({"requests": [_request("same"), _request("other"), _request("same")]},
                                400, "requests.2.custom_id"),
        "bad custom_id": ({"requests": [_request("has space")]}, 400, "custom_id"),
        "long custom_id": ({"requests": [_request("x" * 65)]}, 400, "custom_id"),
        "stream": ({"requests": [_request("s", stream=True)]}, 400, "requests.0.params.stream"),
        "unknown model": ({"requests": [_request("u", model="no-such-model")]}, 400, "requests.0.params.model"),
        "bad params": ({"requests": [_request("t", temperature=3)]}, 400, "temperature"),
        "no max_tokens": ({"requests": [{"custom_id": "m", "params": {"model": "capture-claude", "messages": [
            {"role": "user", "content": "hi"}]}}]}, 400, "max_tokens"),
        "empty": ({"requests": []}, 400, "requests"),
        "not a list": ({"requests": "all of them"}, 400, "requests"),
        "too many": ({"requests": [_request(f"n-{i}") for i in range(51)]}, 400, "at most 50"),  # files.max_lines
        "unknown field": ({"requests": [_request("f")], "mode": "fast"}, 400, "mode"),
    }
    for name, (body, status, named) in cases.items():
        code, error = _refused(stack, body)
        assert code == status and error["type"] == "error", (name, error)
        assert error["error"]["type"] == "invalid_request_error" and named in error["error"]["message"], (name, error)
    code, error = _refused(stack, {"requests": [_request("ok"), _request("no", model="gpt-4o-mini")]}, claude_only)
    assert (code, error["error"]["type"]) == (403, "permission_error") and "requests.1.params.model" in str(error)
    with pytest.raises(anthropic.BadRequestError):  # through the SDK too
        _anthropic(stack).messages.batches.create(requests=[_request("a"), _request("a")])  # type: ignore[list-item]
    with session_scope() as db:
        assert db.scalar(select(func.count()).select_from(Batch)) == before
    for path in ("/v1/messages/batches/msgbatch_nope", "/v1/messages/batches/msgbatch_nope/results"):
        r = httpx.get(f"{stack.url}{path}", headers={"x-api-key": stack.keys["acme"]})
        assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    r = httpx.get(f"{stack.url}/v1/messages/batches", params={"before_id": "a", "after_id": "b"},
                  headers={"x-api-key": stack.keys["acme"]})
    assert r.status_code == 400 and r.json()["type"] == "error"
