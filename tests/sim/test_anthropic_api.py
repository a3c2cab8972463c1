"""The Anthropic Messages format, driven by the official anthropic SDK (sync and async) and raw httpx."""

from __future__ import annotations

import asyncio

import anthropic
import pytest

from shared.tokens import count_message_tokens, count_tokens

MESSAGES = [{"role": "user", "content": "Explain token buckets in two sentences."}]
SYSTEM = "You are a patient teacher."
PROMPT = count_message_tokens([{"role": "system", "content": SYSTEM}, *MESSAGES])
RATE_HEADERS = [
    f"anthropic-ratelimit-{axis}-{part}"
    for axis in ("requests", "input-tokens", "output-tokens", "tokens")
    for part in ("limit", "remaining", "reset")
]
TOOL = {"name": "lookup", "description": "Look up a word",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}}


def sdk(sim, key: str = "sk-ant-test") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim.url, api_key=key, max_retries=0)


def test_message_format_and_usage(shared_sim):
    message = sdk(shared_sim).messages.create(
        model="claude-haiku-4-5", system=SYSTEM, messages=MESSAGES, max_tokens=80)
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert message.usage.input_tokens == PROMPT
    assert message.usage.output_tokens == count_tokens(message.content[0].text) <= 80
    assert message.usage.cache_read_input_tokens == 0


def test_stream_events_accumulate_to_the_same_message(shared_sim):
    client = sdk(shared_sim)
    plain = client.messages.create(model="claude-haiku-4-5", system=SYSTEM, messages=MESSAGES, max_tokens=200)
    with client.messages.stream(model="claude-haiku-4-5", system=SYSTEM, messages=MESSAGES,
                                max_tokens=200) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert final.content[0].text == plain.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == PROMPT


def test_forced_tool_use(shared_sim):
    client = sdk(shared_sim)
    message = client.messages.create(model="claude-haiku-4-5", messages=MESSAGES, max_tokens=100,
                                     tools=[TOOL], tool_choice={"type": "tool", "name": "lookup"})
    block = message.content[0]
    assert message.stop_reason == "tool_use" and block.type == "tool_use"
    assert block.name == "lookup" and isinstance(block.input["word"], str)
    with client.messages.stream(model="claude-haiku-4-5", messages=MESSAGES, max_tokens=100, tools=[TOOL],
                                tool_choice={"type": "any"}) as stream:
        final = stream.get_final_message()
    assert final.content[0].input == block.input


def test_async_client_with_bearer_auth(shared_sim):
    async def run() -> list[int]:
        client = anthropic.AsyncAnthropic(base_url=shared_sim.url, auth_token="bearer-key", max_retries=0)
        replies = await asyncio.gather(*[
            client.messages.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": f"n{i}"}],
                                   max_tokens=10)
            for i in range(10)
        ])
        await client.close()
        return [r.usage.output_tokens for r in replies]

    assert all(1 <= n <= 10 for n in asyncio.run(run()))


def test_every_success_carries_anthropic_headers(shared_sim):
    raw = sdk(shared_sim).messages.with_raw_response.create(
        model="claude-haiku-4-5", messages=MESSAGES, max_tokens=10)
    assert all(raw.headers.get(h) for h in RATE_HEADERS)
    assert raw.headers["anthropic-ratelimit-requests-reset"].endswith("Z")


def test_count_tokens_endpoint(shared_sim):
    counted = sdk(shared_sim).messages.count_tokens(model="claude-haiku-4-5", system=SYSTEM, messages=MESSAGES)
    assert counted.input_tokens == PROMPT


def test_errors_in_anthropic_format(shared_sim):
    with pytest.raises(anthropic.BadRequestError) as err:
        sdk(shared_sim).messages.create(model="claude-haiku-4-5", messages=[], max_tokens=10)
    assert err.value.body["type"] == "error"
    assert err.value.body["error"]["type"] == "invalid_request_error"
    with shared_sim.client() as raw:
        r = raw.post("/v1/messages", json={"model": "claude-haiku-4-5", "messages": MESSAGES},
                     headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
