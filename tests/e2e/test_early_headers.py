"""An answer that begins before its job ends (a stream, a sync wait on /v1/jobs) names the job in its
headers at once: a caller whose connection drops still learns the id, and finds the answer later.
A failure after those headers is an error event in the caller's dialect."""

from __future__ import annotations

from typing import Any

import orjson

from tests.conftest import Stack, wait_for_status

SLOW = {"model": "slow", "max_tokens": 8, "messages": [{"role": "user", "content": "take your time"}]}


def _events(lines: list[str]) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in lines if line.startswith("data: {")]


def test_a_stream_names_its_job_before_the_answer_and_a_dropped_caller_finds_it(stack: Stack) -> None:
    with stack.client() as c:
        with c.stream("POST", "/v1/chat/completions", json={**SLOW, "stream": True}) as r:
            job_id = r.headers["x-gateway-job-id"]  # the provider has not answered yet (1.5 s)
            assert r.status_code == 200 and r.headers["x-gateway-status"] in ("queued", "admitted")
        # the caller went away before any event; the job goes on and its answer is kept
        done = wait_for_status(c, job_id, {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["result"]["choices"][0]["message"]["content"]


def test_a_stream_read_to_the_end_carries_the_answer(stack: Stack) -> None:
    with stack.client() as c, c.stream("POST", "/v1/chat/completions", json={**SLOW, "stream": True}) as r:
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert any(e["choices"] and e["choices"][0]["delta"].get("content") for e in _events(lines))


def test_a_sync_wait_on_jobs_names_its_job_at_once(stack: Stack) -> None:
    with stack.client() as c:
        with c.stream("POST", "/v1/jobs", params={"wait": 30}, json=SLOW) as r:
            job_id = r.headers["x-gateway-job-id"]
        done = wait_for_status(c, job_id, {"succeeded", "failed"})
        waited = c.post("/v1/jobs", params={"wait": 30}, json=SLOW)
    assert done["status"] == "succeeded"
    assert waited.status_code == 200 and waited.json()["status"] == "succeeded"
    assert waited.json()["id"] == waited.headers["x-gateway-job-id"]


def test_a_failure_after_the_headers_is_an_error_event_in_each_dialect(stack: Stack, faults: Any) -> None:
    faults(kind="error", status=401, model="gpt-authfail")
    chat = {"model": "authfail", "max_tokens": 8, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    with stack.client() as c:
        with c.stream("POST", "/v1/chat/completions", json=chat) as r:
            openai_lines = list(r.iter_lines())
        with c.stream("POST", "/v1/messages", json=chat, headers={"anthropic-version": "2023-06-01"}) as r:
            anthropic_lines = list(r.iter_lines())
    error = _events(openai_lines)[-1]["error"]
    assert error["code"] == "provider_auth" and "credentials" in error["message"]
    assert "event: error" in anthropic_lines
    assert _events(anthropic_lines)[-1]["type"] == "error"
