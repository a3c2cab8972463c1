"""OpenAI's Responses API through the gateway with the official SDK: non-streamed and streamed, tools,
structured output, on an OpenAI and on an Anthropic deployment (translated through chat), and clear
400s for what it cannot serve."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def _openai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)


def _marker() -> str:
    return f"responses {uuid.uuid4().hex}"


def received(stack: Stack, marker: str) -> dict[str, Any]:
    bodies = [r["body"] for r in httpx.get(f"{stack.sim_url}/sim/requests").json()["requests"]
              if marker in str(r["body"])]
    assert len(bodies) == 1, f"{len(bodies)} bodies hold {marker}"
    return bodies[0]  # type: ignore[no-any-return]


def test_a_response_through_chat_with_the_gateways_headers(stack: Stack) -> None:
    marker = _marker()
    raw = _openai(stack).responses.with_raw_response.create(
        model="capture-gpt", instructions="Be brief.", input=marker, max_output_tokens=40, temperature=0.4,
        extra_headers={"X-Gateway-Feature": "assistant"})
    response = raw.parse()
    assert response.object == "response" and response.status == "completed"
    assert response.output_text
    assert response.usage is not None and response.usage.input_tokens > 0 and response.usage.output_tokens > 0
    assert raw.headers["x-gateway-deployment"] == "capture-gpt@sim" and float(raw.headers["x-gateway-cost-usd"]) > 0
    job = stack.client().get(f"/v1/jobs/{raw.headers['x-gateway-job-id']}").json()
    assert job["feature"] == "assistant" and job["status"] == "succeeded"
    assert received(stack, marker) == {"model": "gpt-capture", "max_completion_tokens": 40, "temperature": 0.4,
                                       "messages": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": marker}]}


def test_a_response_from_an_anthropic_deployment(stack: Stack) -> None:
    marker = _marker()
    response = _openai(stack).responses.create(
        model="capture-claude", input=[{"role": "user", "content": [{"type": "input_text", "text": marker}]}],
        max_output_tokens=30)
    assert response.output_text
    sent = received(stack, marker)
    assert sent["model"] == "claude-capture" and sent["max_tokens"] == 30
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": marker}]}]


def test_function_calls_and_their_outputs_go_both_ways(stack: Stack) -> None:
    client = _openai(stack)
    first = client.responses.create(model="capture-gpt", input="Weather in Paris?", tools=[WEATHER],
                                    tool_choice="required")
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and "city" in json.loads(calls[0].arguments)
    marker = _marker()
    second = client.responses.create(model="capture-gpt", tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": calls[0].call_id, "name": "get_weather",
         "arguments": calls[0].arguments},
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": marker}])
    assert second.output_text
    messages = received(stack, marker)["messages"]
    assert messages[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert messages[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": marker}


def test_structured_output_is_asked_as_a_json_schema(stack: Stack) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    response = _openai(stack).responses.create(
        model="capture-gpt", input="Answer in JSON", max_output_tokens=200,
        text={"format": {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}})
    assert "answer" in json.loads(response.output_text)


def test_the_stream_ends_with_the_whole_response(stack: Stack) -> None:
    with _openai(stack).responses.stream(model="capture-gpt", input=_marker(), max_output_tokens=30) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds
    assert final.output_text and final.usage is not None and final.usage.output_tokens > 0


@pytest.mark.parametrize("model", ["drip", "claude-drip"])
def test_the_stream_is_relayed_event_by_event_from_either_provider(stack: Stack, model: str) -> None:
    with _openai(stack).responses.stream(model=model, input=_marker(), max_output_tokens=200) as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1  # as the provider made them, not one delta replayed from the finished answer
    assert "".join(deltas) == final.output_text
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert final.usage is not None and final.usage.output_tokens == 200
    assert [e.sequence_number for e in events] == list(range(len(events)))


@pytest.mark.parametrize(("extra", "param"), [
    ({"previous_response_id": "resp_123"}, "previous_response_id"),
    ({"tools": [{"type": "web_search"}]}, "tools[0]"),
    ({"background": True}, "background"),
    ({"input": [{"type": "file_search_call", "id": "x"}]}, "input[0]"),
])
def test_what_chat_cannot_serve_is_a_400_naming_the_field(stack: Stack, extra: dict[str, Any], param: str) -> None:
    body = {"model": "capture-gpt", "input": "hi", **extra}
    reply = stack.client().post("/v1/responses", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["code"] == "unsupported_parameter"
