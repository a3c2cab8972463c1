"""Legacy ``POST /v1/completions`` streamed as OpenAI streams it, through the official SDK: the provider's
``text_completion`` chunks as it makes them (every choice, by index), ``[DONE]`` last, the usage only
when asked for, on the fast lane and through a worker; the answer stored is the one streamed, and a
cache hit streams the stored answer in the same form. A provider breaking off mid-stream is the error
the SDK raises; hostile ``stream`` values are a 400."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Stack, wait_for_status

MODEL = "gpt-3.5-turbo-instruct"
STANDARD = {"X-Gateway-Priority": "standard"}  # queued for the scheduler: a worker sends it


def _openai(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["acme"], max_retries=0)


def _texts(chunks: list[Any]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    return texts


def _stored(stack: Stack, job_id: str) -> dict[str, Any]:
    with stack.client() as c:
        return wait_for_status(c, job_id, {"succeeded", "failed"}, timeout=60)


@pytest.mark.parametrize("headers", [{}, STANDARD], ids=["fast-lane", "worker"])
def test_a_completion_streams_its_text_completion_chunks(stack: Stack, headers: dict[str, str]) -> None:
    marker = f"legacy stream {uuid.uuid4().hex}"
    # 12 tokens: the simulator's lengths (lognormal, median 150) fall under it about once in 10^5 choices,
    # so both choices are cut ("length"); at 40 one test run in ~35 saw a choice end on its own ("stop").
    raw = _openai(stack).completions.with_raw_response.create(model=MODEL, prompt=marker, max_tokens=12, n=2,
                                                              stream=True, extra_headers=headers)
    chunks = list(raw.parse())
    assert chunks and all(c.object == "text_completion" for c in chunks)
    assert all(c.usage is None for c in chunks)  # not asked for: the usage the gateway asked for is not relayed
    finishes = {ch.index: ch.finish_reason for c in chunks for ch in c.choices if ch.finish_reason}
    texts = _texts(chunks)
    per_choice = [sum(ch.index == i for c in chunks for ch in c.choices) for i in (0, 1)]
    assert min(per_choice) > 1  # as the provider made them, not one chunk per choice
    job = _stored(stack, raw.headers["x-gateway-job-id"])
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert {c["index"]: c["text"] for c in job["result"]["choices"]} == texts and all(texts.values())
    assert {c["index"]: c["finish_reason"] for c in job["result"]["choices"]} == finishes == {0: "length", 1: "length"}
    assert job["result"]["object"] == "text_completion" and job["usage"]["completion_tokens"] > 0
    sent = [r["body"] for r in httpx.get(f"{stack.sim_url}/sim/requests").json()["requests"]
            if r["body"].get("prompt") == marker]
    assert sent == [{"model": MODEL, "prompt": marker, "max_tokens": 12, "n": 2, "stream": True,
                     "stream_options": {"include_usage": True}}]


def test_the_usage_comes_last_when_asked_for_and_a_cache_hit_streams_the_stored_answer(stack: Stack) -> None:
    body: dict[str, Any] = {"model": MODEL, "prompt": f"legacy usage {uuid.uuid4().hex}", "max_tokens": 1000,
                            "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}
    created = _openai(stack).completions.with_raw_response.create(**body)
    first = list(created.parse())  # it ends with "stop" (the simulator says at most 1000): the cache keeps it
    assert _stored(stack, created.headers["x-gateway-job-id"])["status"] == "succeeded"  # and its answer cached
    assert first[-1].choices == [] and first[-1].usage is not None and first[-1].usage.completion_tokens > 0
    assert all(c.usage is None for c in first[:-1])
    raw = _openai(stack).completions.with_raw_response.create(**body)
    again = list(raw.parse())
    assert raw.headers["x-gateway-cache"] == "hit"
    assert _texts(again) == _texts(first) and again[-1].usage == first[-1].usage


def test_a_provider_breaking_off_mid_stream_is_an_error_the_sdk_raises(stack: Stack, faults: Any) -> None:
    faults(kind="cut", model=MODEL, after_events=3)
    raw = _openai(stack).completions.with_raw_response.create(model=MODEL, prompt=f"cut {uuid.uuid4().hex}",
                                                              max_tokens=1000, stream=True)
    got: list[Any] = []
    with pytest.raises(openai.APIError, match="broke off"):
        got.extend(raw.parse())
    assert got and all(c.object == "text_completion" for c in got)
    job = _stored(stack, raw.headers["x-gateway-job-id"])
    assert job["status"] == "failed" and job["attempts"] == 1 and job["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(("extra", "param"), [
    ('"stream": "yes"', "stream"),
    ('"stream": 1e309', "stream"),
    ('"stream": 1', "stream"),
    ('"stream_options": {"include_usage": true}', "stream_options"),
    ('"stream": true, "stream_options": {"include_usage": "yes"}', "stream_options"),
])
def test_hostile_stream_values_are_a_400_naming_the_field(stack: Stack, extra: str, param: str) -> None:
    body = '{"model": "' + MODEL + '", "prompt": "hi", ' + extra + "}"
    reply = stack.client().post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert reply.status_code == 400, reply.text
    assert param in (reply.json()["error"].get("param") or reply.text)
