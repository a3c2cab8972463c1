"""What a streamed call does when something goes wrong: a provider failing after the first event ends
the stream with an error event in the caller's dialect (never retried: the caller has part of the
answer), the attempt recorded and settled by what was produced; a failure before it is retried or
falls back as usual. A caller that leaves aborts the call unless it resumes within the grace
(``streaming.resume_grace_s``); ``GET /v1/jobs/{id}/stream`` resumes after ``Last-Event-ID``."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import Stack, wait_for_status

DRIP = {"model": "drip", "max_tokens": 200, "stream": True}  # ~4 s of events (tests/sim.test.yaml)


def _messages() -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"A long story {uuid.uuid4().hex[:8]}"}]


def _frames(lines: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(id, data) of each event, from the lines of an SSE answer."""
    frames, current = [], -1
    for line in lines:
        if line.startswith("id: "):
            current = int(line[4:])
        elif line.startswith("data: {"):
            frames.append((current, orjson.loads(line[6:])))
    return frames


def _lines(text: str) -> list[str]:
    """The non-empty lines of an SSE answer read whole."""
    return [line for line in text.splitlines() if line]


def _text(frames: list[tuple[int, dict[str, Any]]]) -> str:
    return "".join(d["choices"][0]["delta"].get("content") or "" for _, d in frames if d.get("choices"))


def _ended(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.client() as c:
        return wait_for_status(c, job_id, {"succeeded", "failed"}, timeout=60)


def test_a_provider_failing_mid_stream_is_an_error_event_and_is_not_retried(stack: Stack, faults: Any) -> None:
    faults(kind="cut", model="gpt-drip", after_events=4)
    client = openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)
    raw = client.chat.completions.with_raw_response.create(messages=_messages(), **DRIP)
    got = []
    with pytest.raises(openai.APIError) as err:
        for chunk in raw.parse():
            got += [chunk.choices[0].delta.content] if chunk.choices and chunk.choices[0].delta.content else []
    assert got and "broke off" in str(err.value)
    job = _ended(stack, raw.headers["x-gateway-job-id"])
    assert job["status"] == "failed" and job["attempts"] == 1 and job["error"]["type"] == "connection"
    assert 0 < job["usage"]["completion_tokens"] < 200  # settled and billed by what was produced
    assert job["cost_usd"] > 0


def test_an_anthropic_caller_gets_an_error_event_mid_stream(stack: Stack, faults: Any) -> None:
    faults(kind="cut", model="claude-drip", after_events=5)
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    pieces: list[str] = []
    with pytest.raises(anthropic.APIError), client.messages.stream(
            model="claude-drip", max_tokens=200, messages=_messages()) as stream:
        pieces.extend(stream.text_stream)
    assert pieces


def test_a_failure_before_the_first_event_falls_back_and_the_caller_gets_the_whole_answer(
        stack: Stack, faults: Any) -> None:
    faults(kind="cut", model="gpt-xd", after_events=0)  # headers, then the connection dropped: nothing streamed
    with stack.client() as c, c.stream("POST", "/v1/chat/completions", json={
            "model": "xd-openai-first", "max_tokens": 40, "stream": True, "messages": _messages()}) as r:
        job_id = r.headers["x-gateway-job-id"]
        lines = [line for line in r.iter_lines() if line]
    job = _ended(stack, job_id)
    assert lines[-1] == "data: [DONE]" and not any('"error"' in line for line in lines)
    assert job["status"] == "succeeded" and job["deployment"] == "claude-haiku@sim" and job["attempts"] == 2
    assert _text(_frames(lines)) == job["result"]["choices"][0]["message"]["content"]


def test_a_caller_that_leaves_and_does_not_come_back_aborts_the_call(stack: Stack) -> None:
    with stack.client() as c, c.stream("POST", "/v1/chat/completions", json={**DRIP, "messages": _messages()}) as r:
        job_id = r.headers["x-gateway-job-id"]
        for line in r.iter_lines():
            if line.startswith("data: {") and orjson.loads(line[6:])["choices"][0]["delta"].get("content"):
                break  # one piece of the answer, then the caller hangs up
    job = _ended(stack, job_id)
    assert job["status"] == "failed" and job["error"]["type"] == "caller_left"
    assert 0 < job["usage"]["completion_tokens"] < 200  # the call was aborted; what it produced is billed


def test_a_caller_that_resumes_within_the_grace_gets_the_rest_from_where_it_left(stack: Stack) -> None:
    with stack.client() as c:
        with c.stream("POST", "/v1/chat/completions", json={**DRIP, "messages": _messages()}) as r:
            job_id = r.headers["x-gateway-job-id"]
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if len(_frames(lines)) == 5:
                    break
        first = _frames(lines)
        with c.stream("GET", f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": str(first[-1][0])}) as r:
            assert r.status_code == 200 and r.headers["x-gateway-job-id"] == job_id
            rest_lines = [line for line in r.iter_lines() if line]
        job = wait_for_status(c, job_id, {"succeeded", "failed"})
    rest = _frames(rest_lines)
    assert [i for i, _ in first + rest] == list(range(len(first) + len(rest)))  # nothing lost, nothing twice
    assert rest_lines[-1] == "data: [DONE]"
    assert job["status"] == "succeeded"
    assert _text(first + rest) == job["result"]["choices"][0]["message"]["content"]


def test_a_resumed_reader_that_leaves_again_aborts_the_call_after_the_grace(stack: Stack, faults: Any) -> None:
    faults(kind="slowdown", factor=3, model="gpt-drip")  # ~12 s of events: both leaves well within it
    with stack.client() as c:
        with c.stream("POST", "/v1/chat/completions", json={**DRIP, "messages": _messages()}) as r:
            job_id = r.headers["x-gateway-job-id"]
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if len(_frames(lines)) == 2:
                    break  # the first caller leaves ...
        with c.stream("GET", f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "1"}) as r:
            lines = []
            for line in r.iter_lines():
                lines.append(line)
                if _frames(lines):
                    break  # ... comes back, and leaves again for good
    job = _ended(stack, job_id)
    assert job["status"] == "failed" and job["error"]["type"] == "caller_left"
    assert 0 < job["usage"]["completion_tokens"] < 200


def test_a_finished_stream_replays_in_its_dialect_and_a_job_without_one_as_its_stored_answer(stack: Stack) -> None:
    claude = httpx.Client(base_url=stack.url, headers={"x-api-key": stack.keys["acme"]}, timeout=60)
    with claude, claude.stream("POST", "/v1/messages", json={
            "model": "gpt-4o-mini", "max_tokens": 40, "stream": True, "messages": _messages()}) as r:
        job_id, live = r.headers["x-gateway-job-id"], [line for line in r.iter_lines() if line]
    with stack.client() as c:
        _ended(stack, job_id)
        replayed = _lines(c.get(f"/v1/jobs/{job_id}/stream", headers={"Last-Event-ID": "2"}).text)
        assert _frames(replayed) == [f for f in _frames(live) if f[0] > 2]  # the same Anthropic events
        plain = c.post("/v1/jobs", params={"wait": 30}, json={"model": "gpt-4o-mini", "max_tokens": 20,
                                                              "messages": _messages()}).json()
        stored = _lines(c.get(f"/v1/jobs/{plain['id']}/stream").text)
    assert stored[-1] == "data: [DONE]"
    assert _text(_frames(stored)) == plain["result"]["choices"][0]["message"]["content"]


def test_a_native_job_can_stream_into_its_job_stream(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", json={"model": "gpt-4o-mini", "max_tokens": 40, "stream": True,
                                       "messages": _messages()}).json()
        lines = _lines(c.get(f"/v1/jobs/{job['id']}/stream").text)
        done = wait_for_status(c, job["id"], {"succeeded", "failed"})
    assert lines[-1] == "data: [DONE]" and len(_frames(lines)) > 3
    assert _text(_frames(lines)) == done["result"]["choices"][0]["message"]["content"]


def test_resuming_needs_an_event_id_and_the_tenants_own_job(stack: Stack) -> None:
    with stack.client() as c:
        job = c.post("/v1/jobs", params={"wait": 30}, json={"model": "gpt-4o-mini", "max_tokens": 5,
                                                            "messages": _messages()}).json()
        bad = c.get(f"/v1/jobs/{job['id']}/stream", headers={"Last-Event-ID": "yesterday"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "Last-Event-ID"
    with stack.client("globex") as other:
        assert other.get(f"/v1/jobs/{job['id']}/stream").status_code == 404


def test_a_reader_that_does_not_read_holds_up_nobody_and_its_job_completes(stack: Stack) -> None:
    with stack.client() as c, c.stream("POST", "/v1/chat/completions",
                                       json={**DRIP, "messages": _messages()}) as slow:
        job_id = slow.headers["x-gateway-job-id"]
        quick = c.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "max_tokens": 20, "stream": True,
                                                     "messages": _messages()})
        assert _lines(quick.text)[-1] == "data: [DONE]"  # another stream, start to end, meanwhile
        job = wait_for_status(c, job_id, {"succeeded", "failed"}, timeout=60)
        lines = [line for line in slow.iter_lines() if line]  # read only now: the whole answer is still there
    assert job["status"] == "succeeded"
    assert _text(_frames(lines)) == job["result"]["choices"][0]["message"]["content"]
