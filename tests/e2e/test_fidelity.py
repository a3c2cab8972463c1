"""Every field a caller sends reaches the provider: the official SDKs against the real gateway, and the
simulator's record of the bodies it received (``GET /sim/requests``) as the provider's side.

Same dialect: the provider receives exactly what the caller wrote, ``model`` aside (unknown fields,
``cache_control``, ``top_k`` included). Across dialects: translated, and a field with no equivalent is
refused with a 400 naming it, or skips the deployment when another can serve, or is dropped where the
operator said so (``drop_unsupported``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest
import redis

from shared.cache.plan import plan_for
from shared.config import get_settings
from shared.dialects import chat_view
from shared.keys import Keys
from shared.routing import chain_for
from tests.conftest import PREFIX, REDIS_URL, Stack


def _openai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)


def _anthropic(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)


def _marker() -> str:
    return f"fidelity {uuid.uuid4().hex}"


def received(stack: Stack, marker: str) -> dict[str, Any]:
    """The one body the simulator received that holds ``marker``."""
    bodies = [r["body"] for r in httpx.get(f"{stack.sim_url}/sim/requests").json()["requests"]
              if marker in str(r["body"])]
    assert len(bodies) == 1, f"{len(bodies)} bodies hold {marker}"
    return bodies[0]  # type: ignore[no-any-return]


def test_an_openai_request_reaches_an_openai_deployment_exactly_as_written(stack: Stack) -> None:
    sent: dict[str, Any] = {
        "model": "capture-gpt", "max_tokens": 24, "temperature": 0.3, "top_p": 0.9, "seed": 7, "n": 3,
        "logprobs": True, "top_logprobs": 2, "presence_penalty": 0.1, "prompt_cache_key": "tenant-42",
        "store": False, "user": "u-1", "stop": ["END"], "response_format": {"type": "text"},
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": _marker()}]}],
    }
    completion = _openai(stack).chat.completions.create(**sent, extra_body={"a_future_option": {"x": [1, 2]}})
    assert len(completion.choices) == 3  # n > 1 where the deployment has it
    got = received(stack, sent["messages"][1]["content"][0]["text"])
    assert got == {**sent, "model": "gpt-capture", "a_future_option": {"x": [1, 2]}}


def test_an_anthropic_request_reaches_an_anthropic_deployment_exactly_as_written(stack: Stack) -> None:
    marker = _marker()
    sent: dict[str, Any] = {
        "model": "capture-claude", "max_tokens": 24, "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "system": [{"type": "text", "text": "A long, stable instruction. " * 20,
                    "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": marker,
                                                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}],
    }
    # This SDK's create() no longer names top_k or temperature: they go as the SDK's extra body, as would
    # any field a newer API has and the SDK does not know yet.
    extra = {"top_k": 5, "temperature": 0.2, "a_future_option": True}
    raw = _anthropic(stack).messages.with_raw_response.create(**sent, extra_body=extra)
    assert raw.parse().content[0].text
    assert raw.headers["x-gateway-deployment"] == "capture-claude@sim"
    assert received(stack, marker) == {**sent, **extra, "model": "claude-capture"}


def test_across_dialects_the_request_is_translated(stack: Stack) -> None:
    marker = _marker()
    _openai(stack).chat.completions.create(
        model="capture-claude", max_completion_tokens=20, temperature=1.5, stop="END", user="u-9",
        prompt_cache_key="hint only", messages=[{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": marker}])
    assert received(stack, marker) == {
        "model": "claude-capture", "max_tokens": 20, "system": "Be brief.", "temperature": 1.0,  # the nearest
        "stop_sequences": ["END"], "metadata": {"user_id": "u-9"}, "messages": [{"role": "user", "content": marker}]}


def test_a_field_the_other_dialect_cannot_carry_is_refused_by_name(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _openai(stack).chat.completions.create(model="capture-claude", seed=3, max_tokens=5,
                                               messages=[{"role": "user", "content": _marker()}])
    assert err.value.code == "unsupported_parameter" and err.value.param == "seed"
    assert "seed" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        _openai(stack).chat.completions.create(model="capture-claude", n=2, max_tokens=5,
                                               messages=[{"role": "user", "content": _marker()}])
    assert err.value.param == "n"
    with pytest.raises(anthropic.BadRequestError) as aerr:
        _anthropic(stack).messages.create(model="capture-gpt", max_tokens=5, extra_body={"top_k": 3},
                                          messages=[{"role": "user", "content": _marker()}])
    assert aerr.value.body["error"]["message"].startswith("top_k: ")  # type: ignore[index]


def test_a_deployment_that_cannot_carry_the_request_is_skipped_for_one_that_can(stack: Stack) -> None:
    # capture-mixed is [capture-claude@sim, capture-gpt@sim]: seed sends it past the first
    plain = _openai(stack).chat.completions.with_raw_response.create(
        model="capture-mixed", max_tokens=5, messages=[{"role": "user", "content": _marker()}])
    assert plain.headers["x-gateway-deployment"] == "capture-claude@sim"
    marker = _marker()
    seeded = _openai(stack).chat.completions.with_raw_response.create(
        model="capture-mixed", max_tokens=5, seed=11, messages=[{"role": "user", "content": marker}])
    assert seeded.headers["x-gateway-deployment"] == "capture-gpt@sim"
    assert received(stack, marker)["seed"] == 11


def test_drop_unsupported_sends_what_translates_and_leaves_the_rest(stack: Stack) -> None:
    marker = _marker()
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="capture-claude-drop", max_tokens=5, seed=3, logprobs=True, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": marker}])
    assert raw.parse().choices[0].message.content
    assert received(stack, marker) == {"model": "claude-capture-drop", "max_tokens": 5,
                                       "messages": [{"role": "user", "content": marker}]}


def _wait_cached(body: dict[str, Any], dialect: str) -> None:
    settings = get_settings()
    model = body["model"]
    plan = plan_for(settings, "acme", "default", model, chain_for(settings, model), chat_view(body, dialect))
    store, key = redis.Redis.from_url(REDIS_URL), Keys(PREFIX).cache_entry("acme", plan.digest)
    deadline = time.monotonic() + 10
    while not store.exists(key):
        assert time.monotonic() < deadline, "the answer was never stored"
        time.sleep(0.01)


def test_the_cache_serves_twins_across_dialects_but_never_a_request_with_other_fields(stack: Stack) -> None:
    marker = _marker()
    body = {"model": "capture-claude", "max_tokens": 64, "temperature": 0,
            "messages": [{"role": "user", "content": marker}]}
    first = _anthropic(stack).messages.with_raw_response.create(
        model=body["model"], max_tokens=64, messages=body["messages"], extra_body={"temperature": 0})
    assert first.headers["x-gateway-cache"] == "miss"
    _wait_cached(body, "anthropic")
    twin = _openai(stack).chat.completions.with_raw_response.create(**body)
    assert twin.headers["x-gateway-cache"] == "hit"
    assert twin.parse().choices[0].message.content == first.parse().content[0].text
    other = _anthropic(stack).messages.with_raw_response.create(
        model=body["model"], max_tokens=64, messages=body["messages"], extra_body={"temperature": 0, "top_k": 2})
    assert other.headers["x-gateway-cache"] == "miss"


def test_a_stream_of_several_choices_carries_every_one(stack: Stack) -> None:
    stream = _openai(stack).chat.completions.create(
        model="capture-gpt", n=3, max_tokens=16, stream=True, messages=[{"role": "user", "content": _marker()}])
    texts: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
    assert sorted(texts) == [0, 1, 2] and all(texts.values())



def test_an_anthropic_answer_reaches_an_anthropic_caller_as_the_provider_gave_it(stack: Stack) -> None:
    """No round trip through the OpenAI form: a thinking block and its signature, which the caller must
    send back unchanged on its next turn, the block order and the cache usage split all arrive, and the
    job keeps the answer so."""
    marker = _marker()
    raw = _anthropic(stack).messages.with_raw_response.create(
        model="capture-claude", max_tokens=64, thinking={"type": "enabled", "budget_tokens": 32},
        messages=[{"role": "user", "content": marker}])
    message = raw.parse()
    assert [block.type for block in message.content] == ["thinking", "text"]
    thinking = message.content[0]
    assert thinking.type == "thinking" and thinking.signature.startswith("sig_")
    assert message.usage.cache_read_input_tokens == 0 and message.usage.cache_creation_input_tokens == 0
    assert message.model == "capture-claude"
    assert received(stack, marker)["thinking"] == {"type": "enabled", "budget_tokens": 32}
    with stack.client() as c:
        job = c.get(f"/v1/jobs/{raw.headers['x-gateway-job-id']}").json()
    assert job["result"]["type"] == "message" and job["result"]["content"][0]["signature"] == thinking.signature
