"""The Responses API streamed as OpenAI streams it, through the official SDK's helpers (sync and async):
function calls item by item with their argument deltas as the provider sends them (OpenAI or
Anthropic), on the fast lane and through a worker, and a provider that breaks off mid-stream ending
in ``response.failed``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import openai
import pytest

from tests.conftest import Stack, wait_for_status

WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
STANDARD = {"X-Gateway-Priority": "standard"}  # queued for the scheduler: a worker sends it


def _openai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)


def _input() -> str:
    return f"Weather in Paris? {uuid.uuid4().hex}"


@pytest.mark.parametrize(("model", "headers"), [("capture-gpt", {}), ("capture-gpt", STANDARD), ("capture-claude", {})],
                         ids=["fast-lane", "worker", "anthropic"])
def test_a_function_call_streams_as_its_own_item_with_its_argument_deltas(stack: Stack, model: str,
                                                                          headers: dict[str, str]) -> None:
    with _openai(stack).responses.stream(model=model, input=_input(), tools=[WEATHER],
                                         tool_choice="required", extra_headers=headers) as stream:
        events: list[Any] = list(stream)
        final: Any = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    added = next(e for e in events if e.type == "response.output_item.added")
    assert added.item.type == "function_call" and added.item.status == "in_progress" and added.item.arguments == ""
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    item_done = next(e for e in events if e.type == "response.output_item.done")
    assert kinds.index("response.output_item.added") < kinds.index("response.function_call_arguments.delta") \
        < kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")
    call = final.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and "city" in json.loads(call.arguments)
    assert "".join(d.delta for d in deltas) == done.arguments == call.arguments
    assert {added.item.id, done.item_id, item_done.item.id, call.id} == {call.id}
    assert {added.output_index, done.output_index, item_done.output_index} == {0}
    assert item_done.item.call_id == call.call_id and call.status == "completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.anyio
async def test_the_async_sdk_streams_a_function_call(stack: Stack) -> None:
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)
    stream = await client.responses.create(model="capture-gpt", input=_input(), tools=[WEATHER],
                                           tool_choice="required", stream=True)
    events = [event async for event in stream]
    await client.close()
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    final = events[-1]
    assert final.type == "response.completed"
    assert final.response.output[0].type == "function_call"
    assert final.response.output[0].arguments == arguments and json.loads(arguments)


def test_a_provider_breaking_off_ends_the_stream_with_response_failed(stack: Stack, faults: Any) -> None:
    faults(kind="cut", model="gpt-drip", after_events=4)
    raw = _openai(stack).responses.with_raw_response.create(model="drip", input=_input(), max_output_tokens=200,
                                                            stream=True)
    with raw.parse() as stream:
        events: list[Any] = list(stream)  # the SDK reads response.failed as the stream's last event, not an exception
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"
    assert "response.output_text.delta" in kinds and "response.completed" not in kinds
    failed = events[-1].response
    assert failed.status == "failed" and failed.id == events[0].response.id
    assert failed.error is not None and failed.error.code == "server_error" and "broke off" in failed.error.message
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert failed.output[0].type == "message" and failed.output[0].content[0].text == streamed
    with stack.client() as c:
        job = wait_for_status(c, raw.headers["x-gateway-job-id"], {"succeeded", "failed"}, timeout=60)
    assert job["status"] == "failed" and job["attempts"] == 1


@pytest.mark.anyio
async def test_the_async_stream_helper_sees_response_failed_and_has_no_final_response(stack: Stack,
                                                                                      faults: Any) -> None:
    faults(kind="cut", model="gpt-drip", after_events=4)
    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)
    async with client.responses.stream(model="drip", input=_input(), max_output_tokens=200) as stream:
        kinds = [event.type async for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            await stream.get_final_response()
    await client.close()
    assert kinds[0] == "response.created" and kinds[-1] == "response.failed"


@pytest.mark.parametrize("headers", [{}, STANDARD], ids=["fast-lane", "worker"])
def test_a_call_failing_before_its_first_event_ends_in_response_failed(stack: Stack, faults: Any,
                                                                       headers: dict[str, str]) -> None:
    faults(kind="error", status=400, model="gpt-drip")  # the provider refuses it: nothing streamed, no retry
    raw = _openai(stack).responses.with_raw_response.create(model="drip", input=_input(), max_output_tokens=50,
                                                            stream=True, extra_headers=headers)
    with raw.parse() as stream:
        events: list[Any] = list(stream)
    assert [e.type for e in events] == ["response.created", "response.in_progress", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.id == events[0].response.id and failed.output == []
    assert failed.error is not None and failed.error.message
    assert [e.sequence_number for e in events] == [0, 1, 2]
