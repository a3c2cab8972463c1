"""A streamed call is relayed as the provider produces it, in the caller's dialect, through the official
SDKs' streaming helpers: the same pieces the provider streamed, in order, on the fast lane (the api
sends the call) and through a worker; across dialects when the deployment speaks the other one; and
the whole answer stored, with the provider's own usage as the job's (the budget settles on it)."""

from __future__ import annotations

import uuid
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from tests.conftest import ADMIN, Stack, wait_for_status

OPENAI_KEY = {"Authorization": "Bearer sk-sim-openai"}
ANTHROPIC_KEY = {"x-api-key": "sk-ant-sim", "anthropic-version": "2023-06-01"}
STANDARD = {"X-Gateway-Priority": "standard"}  # queued for the scheduler: a worker sends it


def _prompt() -> list[dict[str, Any]]:
    return [{"role": "user", "content": f"Tell me about streams {uuid.uuid4().hex[:8]}"}]


def _sim_openai(stack: Stack, model: str, messages: list[dict[str, Any]], max_tokens: int = 60,
                **extra: Any) -> list[dict[str, Any]]:
    """The chunks the simulator streams for this request when called directly."""
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True,
            "stream_options": {"include_usage": True}, **extra}
    with httpx.stream("POST", f"{stack.sim_url}/v1/chat/completions", json=body, headers=OPENAI_KEY) as r:
        return [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def _sim_anthropic(stack: Stack, model: str, messages: list[dict[str, Any]], max_tokens: int = 60,
                   **extra: Any) -> list[dict[str, Any]]:
    body = {"model": model, "messages": messages, "max_tokens": max_tokens, "stream": True, **extra}
    with httpx.stream("POST", f"{stack.sim_url}/v1/messages", json=body, headers=ANTHROPIC_KEY) as r:
        return [orjson.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def _contents(chunks: list[Any]) -> list[str]:
    return [c["choices"][0]["delta"]["content"] for c in chunks
            if c.get("choices") and c["choices"][0]["delta"].get("content")]


def _texts(events: list[dict[str, Any]]) -> list[str]:
    return [e["delta"]["text"] for e in events if e["type"] == "content_block_delta" and e["delta"].get("text")]


def _openai(stack: Stack, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys[tenant], max_retries=0)


def _claude(stack: Stack, tenant: str = "acme") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=stack.keys[tenant], max_retries=0)


def _job(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.client() as c:
        return wait_for_status(c, job_id, {"succeeded", "failed"})


def _sent_by(stack: Stack, job_id: str) -> str:
    """Every acme record (jsonl): the suite's shared stack holds more than a page of them by now."""
    lines = httpx.get(f"{stack.url}/v1/admin/audit", params={"tenant": "acme", "format": "jsonl"},
                      headers=ADMIN, timeout=30).content.splitlines()
    return next(r["decision"]["sent_by"] for r in map(orjson.loads, lines) if r["job_id"] == job_id)


@pytest.mark.parametrize("headers", [{}, STANDARD], ids=["fast-lane", "worker"])
def test_the_openai_sdk_gets_the_providers_chunks_in_order_and_the_job_its_usage(
        stack: Stack, headers: dict[str, str]) -> None:
    while True:  # the simulator answers a request the same way each time; some answers are a piece or two
        messages = _prompt()
        direct = _sim_openai(stack, "gpt-4o-mini", messages)
        if len(_contents(direct)) > 2:
            break
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, max_tokens=60, stream=True, extra_headers=headers)
    chunks = [c.model_dump() for c in raw.parse()]
    assert _contents(chunks) == _contents(direct) and len(_contents(chunks)) > 2  # every piece, as it came
    assert all(c.get("usage") is None for c in chunks)  # the caller did not ask for the usage
    assert chunks[-1]["choices"][0]["finish_reason"] == direct[-2]["choices"][0]["finish_reason"]
    job_id = raw.headers["x-gateway-job-id"]
    job = _job(stack, job_id)
    assert job["status"] == "succeeded"
    assert job["result"]["choices"][0]["message"]["content"] == "".join(_contents(direct))
    usage = direct[-1]["usage"]  # what the provider reported: the job is settled and billed on it
    assert job["usage"]["prompt_tokens"] == usage["prompt_tokens"]
    assert job["usage"]["completion_tokens"] == usage["completion_tokens"]
    assert _sent_by(stack, job_id) == ("worker" if headers else "api")


def test_the_usage_chunk_goes_to_a_caller_that_asked_for_it(stack: Stack) -> None:
    messages = _prompt()
    direct = _sim_openai(stack, "gpt-4o-mini", messages)
    chunks = list(_openai(stack).chat.completions.create(
        model="gpt-4o-mini", messages=messages, max_tokens=60, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and not chunks[-1].choices
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        k: v for k, v in direct[-1]["usage"].items() if v is not None}
    sent = [r["body"] for r in httpx.get(f"{stack.sim_url}/sim/requests").json()["requests"]
            if r["body"].get("messages") == messages]
    assert all(b["stream"] is True and b["stream_options"] == {"include_usage": True} for b in sent)


@pytest.mark.anyio
async def test_the_async_openai_sdk_streams_many_at_once(stack: Stack) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["globex"], max_retries=0)
    prompts = [_prompt() for _ in range(8)]

    async def one(messages: list[dict[str, Any]]) -> list[str]:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=messages,
                                                      max_tokens=40, stream=True)
        return [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]

    got = await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    for messages, pieces in zip(prompts, got, strict=True):
        assert pieces == _contents(_sim_openai(stack, "gpt-4o-mini", messages, 40))


@pytest.mark.parametrize("headers", [{}, STANDARD], ids=["fast-lane", "worker"])
def test_the_anthropic_sdk_gets_the_providers_events(stack: Stack, headers: dict[str, str]) -> None:
    messages = _prompt()  # a fixed-length answer in small events: always several pieces
    direct = _sim_anthropic(stack, "claude-drip", messages)
    with _claude(stack).messages.stream(model="claude-drip", max_tokens=60, messages=messages,
                                        extra_headers=headers) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == _texts(direct) and len(pieces) > 2
    end = next(e for e in direct if e["type"] == "message_delta")
    assert final.usage.output_tokens == end["usage"]["output_tokens"]
    assert final.stop_reason == end["delta"]["stop_reason"]


@pytest.mark.anyio
async def test_the_async_anthropic_sdk_streams(stack: Stack) -> None:
    messages = _prompt()
    client = anthropic.AsyncAnthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    async with client.messages.stream(model="claude-haiku-4-5", max_tokens=60,
                                      messages=messages) as stream:
        pieces = [text async for text in stream.text_stream]
        final = await stream.get_final_message()
    await client.close()
    assert pieces == _texts(_sim_anthropic(stack, "claude-haiku-4-5", messages))
    assert final.content[0].type == "text" and final.content[0].text == "".join(pieces)


def test_an_anthropic_caller_of_an_openai_deployment_gets_anthropic_events(stack: Stack) -> None:
    messages = _prompt()
    direct = _sim_openai(stack, "gpt-4o-mini", messages)
    with _claude(stack).messages.stream(model="gpt-4o-mini", max_tokens=60, messages=messages) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == _contents(direct)
    assert final.usage.output_tokens == direct[-1]["usage"]["completion_tokens"]
    assert final.usage.input_tokens == direct[-1]["usage"]["prompt_tokens"]
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_an_openai_caller_of_an_anthropic_deployment_gets_chunks_and_usage(stack: Stack) -> None:
    messages = _prompt()
    direct = _sim_anthropic(stack, "claude-haiku-4-5", messages)
    chunks = list(_openai(stack).chat.completions.create(
        model="claude-haiku-4-5", messages=messages, max_tokens=60, stream=True,
        stream_options={"include_usage": True}))
    assert [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content] == _texts(direct)
    end = next(e for e in direct if e["type"] == "message_delta")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == end["usage"]["output_tokens"]


TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-haiku-4-5"])
def test_a_streamed_tool_call_reaches_the_openai_sdk_whole(stack: Stack, model: str) -> None:
    with _openai(stack).beta.chat.completions.stream(
            model=model, messages=[{"role": "user", "content": "Weather in Paris?"}], max_tokens=100,
            tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in orjson.loads(call.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
def test_a_streamed_tool_call_reaches_the_anthropic_sdk_whole(stack: Stack, model: str) -> None:
    tool = {"name": "get_weather", "description": "The weather in a city",
            "input_schema": TOOL["function"]["parameters"]}
    with _claude(stack).messages.stream(model=model, max_tokens=100, tools=[tool],
                                        tool_choice={"type": "tool", "name": "get_weather"},
                                        messages=[{"role": "user", "content": "Weather in Paris?"}]) as stream:
        final = stream.get_final_message()
    block = next(b for b in final.content if b.type == "tool_use")
    assert block.name == "get_weather" and "city" in block.input
    assert final.stop_reason == "tool_use"


def test_a_fallback_across_dialects_streams_in_the_callers_dialect(stack: Stack, faults: Any) -> None:
    faults(kind="error", status=500, model="gpt-xd")  # the first choice fails before streaming anything
    faults(kind="error", status=500, model="claude-xd")
    messages = _prompt()
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="xd-openai-first", messages=messages, max_tokens=60, stream=True)
    pieces = [c.choices[0].delta.content for c in raw.parse() if c.choices and c.choices[0].delta.content]
    assert pieces == _texts(_sim_anthropic(stack, "claude-haiku-4-5", messages))
    job = _job(stack, raw.headers["x-gateway-job-id"])
    assert job["deployment"] == "claude-haiku@sim" and job["attempts"] == 2
    with _claude(stack).messages.stream(model="xd-claude-first", max_tokens=60, messages=messages) as stream:
        assert list(stream.text_stream) == _contents(_sim_openai(stack, "gpt-4o-mini", messages))


def test_stream_options_without_stream_or_of_the_wrong_type_is_a_400_and_nothing_is_stored(stack: Stack) -> None:
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    with stack.client() as c:
        before = c.get("/v1/jobs", params={"limit": 1}).json()["data"]
        for body in ({**base, "stream_options": {"include_usage": True}},
                     {**base, "stream": True, "stream_options": {"include_usage": "yes"}},
                     {**base, "stream": True, "n": 200}):  # n > 1 streams (every choice, by index) up to 128
            r = c.post("/v1/chat/completions", json=body)
            assert r.status_code == 400, body
            assert r.json()["error"]["type"] == "invalid_request_error"
        assert c.get("/v1/jobs", params={"limit": 1}).json()["data"] == before
