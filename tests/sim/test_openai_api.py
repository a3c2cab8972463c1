"""The OpenAI format, driven by the official openai SDK (sync and async) and raw httpx."""

from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest

from ops.sim.config import SimulatorConfig
from shared.tokens import count_message_tokens, count_tokens

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Summarise the rate limit rules in one line."},
]
RATE_HEADERS = [
    "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens",
]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                   "required": ["city", "days"]},
}}


def sdk(sim, key: str = "sk-test") -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url + "/v1", api_key=key, max_retries=0)


def test_completion_has_usage_counted_with_shared_tokenizer(shared_sim):
    reply = sdk(shared_sim).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=50)
    assert reply.object == "chat.completion" and reply.model == "gpt-4o-mini"
    text = reply.choices[0].message.content
    assert text and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens == count_message_tokens(MESSAGES, "gpt-4o-mini")
    assert reply.usage.completion_tokens == count_tokens(text) <= 50
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_same_request_same_reply_and_max_tokens_cuts(shared_sim):
    client = sdk(shared_sim)
    first = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=400)
    again = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=400)
    assert first.choices[0].message.content == again.choices[0].message.content
    cut = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=3)
    assert cut.usage.completion_tokens == 3 and cut.choices[0].finish_reason == "length"


def test_n_choices_are_distinct(shared_sim):
    reply = sdk(shared_sim).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=30, n=3)
    texts = [c.message.content for c in reply.choices]
    assert [c.index for c in reply.choices] == [0, 1, 2] and len(set(texts)) == 3
    assert reply.usage.completion_tokens == sum(count_tokens(t) for t in texts)


def test_stream_with_usage_in_final_chunk(shared_sim):
    stream = sdk(shared_sim).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=120, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == count_tokens(text)
    assert chunks[-1].usage.prompt_tokens == count_message_tokens(MESSAGES)


def test_stream_raw_sse_ends_with_done(shared_sim):
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "max_tokens": 20, "stream": True}
    with shared_sim.client() as client, client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert all(h in r.headers for h in RATE_HEADERS)
        lines = [line for line in r.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    assert all(json.loads(line[6:])["object"] == "chat.completion.chunk" for line in lines[:-1])


def test_forced_tool_call_follows_the_schema(shared_sim):
    reply = sdk(shared_sim).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=100, tools=[WEATHER_TOOL], tool_choice="required",
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    call = choice.message.tool_calls[0]
    args = json.loads(call.function.arguments)
    assert call.function.name == "get_weather" and isinstance(args["city"], str) and isinstance(args["days"], int)


def test_streamed_tool_call_accumulates(shared_sim):
    stream = sdk(shared_sim).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=100, stream=True, tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in stream if c.choices and c.choices[0].delta.tool_calls
    )
    assert set(json.loads(arguments)) == {"city", "days"}


def test_async_client(shared_sim):
    async def run() -> list[int]:
        client = openai.AsyncOpenAI(base_url=shared_sim.url + "/v1", api_key="sk-async", max_retries=0)
        replies = await asyncio.gather(*[
            client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}],
                                           max_tokens=20)
            for i in range(20)
        ])
        await client.close()
        return [r.usage.prompt_tokens for r in replies]

    assert asyncio.run(run()) == [count_message_tokens([{"role": "user", "content": f"q{i}"}]) for i in range(20)]


def test_every_success_carries_rate_limit_headers(shared_sim):
    raw = sdk(shared_sim).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, max_tokens=10)
    assert all(raw.headers.get(h) for h in RATE_HEADERS)
    assert raw.headers["x-ratelimit-reset-tokens"].endswith(("ms", "s"))


def test_models_list(shared_sim):
    assert "gpt-4o-mini" in [m.id for m in sdk(shared_sim).models.list()]


def test_bad_requests_get_openai_400(shared_sim):
    client = sdk(shared_sim)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[], max_tokens=10)
    assert err.value.body["param"] == "messages"
    with shared_sim.client() as raw:
        r = raw.post("/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_any_key_is_accepted_by_default_but_a_key_is_required(shared_sim):
    assert sdk(shared_sim, key="whatever-key").models.list()
    r = httpx.post(shared_sim.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


def test_unknown_keys_and_models_can_be_refused(make_sim):
    sim = make_sim(SimulatorConfig.model_validate({
        "require_known_keys": True, "keys": [{"key": "sk-known"}], "unknown_models": "reject",
        "models": {"gpt-4o-mini": {}},
    }))
    with pytest.raises(openai.AuthenticationError):
        sdk(sim, "sk-other").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
    with pytest.raises(openai.NotFoundError) as err:
        sdk(sim, "sk-known").chat.completions.create(model="gpt-9", messages=MESSAGES, max_tokens=5)
    assert err.value.code == "model_not_found"
    assert sdk(sim, "sk-known").chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, max_tokens=5)
