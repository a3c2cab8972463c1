"""OpenAI's embeddings and legacy completions, and Anthropic's token counting, through the real gateway with
the official SDKs: the same tags, budgets, cost and exact cache as chat, and the provider receives the
request as written (the simulator's ``GET /sim/requests``)."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import Stack


def _openai(stack: Stack, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys[tenant], max_retries=0)


def _marker() -> str:
    return f"endpoint {uuid.uuid4().hex}"


def received(stack: Stack, marker: str) -> dict[str, Any]:
    bodies = [r["body"] for r in httpx.get(f"{stack.sim_url}/sim/requests").json()["requests"]
              if marker in str(r["body"])]
    assert len(bodies) == 1, f"{len(bodies)} bodies hold {marker}"
    return bodies[0]  # type: ignore[no-any-return]


def _job(stack: Stack, job_id: str) -> dict[str, Any]:
    return stack.client().get(f"/v1/jobs/{job_id}").json()  # type: ignore[no-any-return]


def test_embeddings_through_the_sdk_are_tagged_costed_and_forwarded_as_written(stack: Stack) -> None:
    texts = [_marker(), "a second input"]
    raw = _openai(stack).embeddings.with_raw_response.create(
        model="text-embedding-3-small", input=texts, dimensions=64, user="u-3",
        extra_headers={"X-Gateway-Feature": "search"})
    result = raw.parse()
    assert [len(item.embedding) for item in result.data] == [64, 64]  # the SDK decoded base64 vectors
    assert result.usage.prompt_tokens > 0
    assert raw.headers["x-gateway-deployment"] == "embed@sim"
    assert float(raw.headers["x-gateway-cost-usd"]) > 0
    job = _job(stack, raw.headers["x-gateway-job-id"])
    assert job["feature"] == "search" and job["status"] == "succeeded"
    assert job["usage"]["completion_tokens"] == 0 and job["usage"]["prompt_tokens"] == result.usage.prompt_tokens
    assert received(stack, texts[0]) == {"model": "text-embedding-3-small", "input": texts, "dimensions": 64,
                                         "user": "u-3", "encoding_format": "base64"}


def test_the_same_embeddings_request_is_served_from_the_cache(stack: Stack) -> None:
    body = {"model": "text-embedding-3-small", "input": _marker(), "encoding_format": "float"}
    first = stack.client().post("/v1/embeddings", json=body)
    assert first.status_code == 200, first.text
    assert first.headers["x-gateway-cache"] == "miss"
    deadline = time.monotonic() + 10
    while (again := stack.client().post("/v1/embeddings", json=body)).headers["x-gateway-cache"] != "hit":
        assert time.monotonic() < deadline, "never served from the cache"
        time.sleep(0.05)  # the answer is stored just after the first caller was answered
    assert again.json()["data"] == first.json()["data"]
    assert float(again.headers["x-gateway-cost-usd"]) == 0
    other_tenant = stack.client("globex").post("/v1/embeddings", json=body)
    assert other_tenant.headers["x-gateway-cache"] == "miss"  # never across tenants


def test_a_chat_request_never_shares_an_embeddings_entry(stack: Stack) -> None:
    text = _marker()
    assert stack.client().post("/v1/embeddings", json={"model": "text-embedding-3-small",
                                                       "input": text}).status_code == 200
    chat = stack.client().post("/v1/chat/completions", json={
        "model": "text-embedding-3-small", "temperature": 0, "messages": [{"role": "user", "content": text}]})
    assert chat.headers.get("x-gateway-cache") != "hit"


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "text-embedding-3-small", "input": ""}, "input"),
    ({"model": "text-embedding-3-small", "input": []}, "input"),
    ({"model": "text-embedding-3-small", "input": [[-1]]}, "input"),
    ({"model": "text-embedding-3-small", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"model": "text-embedding-3-small", "input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x"}, "model"),
])
def test_bad_embeddings_requests_get_a_400_naming_the_field(stack: Stack, body: dict[str, Any], param: str) -> None:
    reply = stack.client().post("/v1/embeddings", json=body)
    assert reply.status_code == 400, reply.text
    assert param in reply.json()["error"]["param"]


def test_embeddings_on_a_model_without_an_embeddings_api_are_refused(stack: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        _openai(stack).embeddings.create(model="embed-claude", input="hi")
    assert err.value.code == "unsupported_parameter" and "anthropic deployments have no embeddings API" in str(
        err.value.message)
    with pytest.raises(openai.NotFoundError):
        _openai(stack).embeddings.create(model="no-such-model", input="hi")


def test_legacy_completions_through_the_sdk(stack: Stack) -> None:
    marker = _marker()
    raw = _openai(stack).completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt=marker, max_tokens=12, n=2, temperature=0.5, echo=False,
        extra_headers={"X-Gateway-Feature": "legacy"})
    completion = raw.parse()
    assert completion.object == "text_completion" and len(completion.choices) == 2
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    assert float(raw.headers["x-gateway-cost-usd"]) > 0
    assert _job(stack, raw.headers["x-gateway-job-id"])["feature"] == "legacy"
    assert received(stack, marker) == {"model": "gpt-3.5-turbo-instruct", "prompt": marker, "max_tokens": 12,
                                       "n": 2, "temperature": 0.5, "echo": False}


def test_count_tokens_is_answered_by_the_gateway_with_the_estimators_count(stack: Stack) -> None:
    claude = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    short = claude.messages.count_tokens(model="claude-haiku-4-5", messages=[{"role": "user", "content": "Hi"}])
    longer = claude.messages.count_tokens(
        model="claude-haiku-4-5", system="You are a careful assistant. " * 10,
        messages=[{"role": "user", "content": "Hi"}])
    assert 0 < short.input_tokens < longer.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "Hi"}])
    bad = httpx.post(f"{stack.url}/v1/messages/count_tokens", headers={"x-api-key": "gw-wrong"},
                     json={"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "Hi"}]})
    assert bad.status_code == 401


def test_base64_embeddings_decode_to_unit_vectors(stack: Stack) -> None:
    reply = stack.client().post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": _marker(),
                                                        "encoding_format": "base64", "dimensions": 8})
    packed = base64.b64decode(reply.json()["data"][0]["embedding"])
    values = struct.unpack("<8f", packed)
    assert abs(sum(v * v for v in values) - 1.0) < 1e-4
