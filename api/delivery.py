"""Turning a finished (or unfinished) job into what the caller's SDK expects.

Every answer carries the job's bookkeeping as ``x-gateway-*`` headers; a job that did not succeed
becomes an error in the caller's dialect that says what happened and what to do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from shared.errors import Conflict, GatewayTimeout, InvalidRequest, Overloaded, ProviderError, answer_for


def gateway_headers(view: dict[str, Any]) -> dict[str, str]:
    usage = view.get("usage") or {}
    headers = {
        "x-gateway-job-id": str(view.get("id", "")),
        "x-gateway-status": str(view.get("status", "")),
        "x-gateway-model": str(view.get("model_used") or view.get("model") or ""),
        "x-gateway-deployment": str(view.get("deployment") or ""),
        "x-gateway-tokens-in": str(usage.get("prompt_tokens", 0)),
        "x-gateway-tokens-out": str(usage.get("completion_tokens", 0)),
        "x-gateway-cost-usd": f"{float(view.get('cost_usd') or 0):.8f}",
        "x-gateway-cache": str(view.get("cache_status") or "miss"),
        "x-gateway-queued-ms": str(view.get("queued_ms") or 0),
    }
    if view.get("cache_source_job"):  # answered from the cache: whose answer, and how close the question was
        headers["x-gateway-cache-source-job"] = str(view["cache_source_job"])
        headers["x-gateway-saved-usd"] = f"{float(view.get('saved_usd') or 0):.8f}"
    if view.get("cache_similarity") is not None:
        headers["x-gateway-cache-similarity"] = f"{float(view['cache_similarity']):.4f}"
    return headers


def raise_unless_succeeded(view: dict[str, Any] | None, job_id: str) -> dict[str, Any]:
    """The job's result, or the error that tells the caller why there is none."""
    if view is None:
        raise GatewayTimeout(
            f"Job {job_id} did not finish within the wait limit; it is still running. "
            f"Fetch it later with GET /v1/jobs/{job_id}.", headers={"x-gateway-job-id": job_id})
    status = view.get("status")
    if status == "succeeded":
        return view["result"]
    error = view.get("error") or {}
    reason = error.get("message") or status
    headers = gateway_headers(view)
    if status == "expired":
        raise Overloaded(f"Job {job_id} expired before it could be sent: {reason}. Retry later or "
                         "give it a longer deadline.", retry_after=5, headers=headers)
    if status == "cancelled":
        raise Conflict(f"Job {job_id} was cancelled before it was sent.", headers=headers)
    kind = str(error.get("type") or "error")
    # A request the provider (or the translation to its format) refused is the caller's to fix: a 400,
    # as a provider that timed out is a 504; the rest is the upstream's failure, a 502.
    failure = {400: InvalidRequest, 504: GatewayTimeout}.get(answer_for(kind)[0], ProviderError)
    raise failure(f"Job {job_id} failed: {kind}: {reason}", headers=headers, code=f"provider_{kind}")


def openai_sse(result: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """A finished chat.completion replayed as OpenAI ``chat.completion.chunk`` events."""
    base = {"id": result.get("id"), "object": "chat.completion.chunk",
            "created": result.get("created", int(time.time())), "model": result.get("model")}
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
    if message.get("tool_calls"):
        delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
    yield _event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
    yield _event({**base, "choices": [{"index": 0, "delta": {},
                                       "finish_reason": choice.get("finish_reason", "stop")}]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": result.get("usage")})
    yield b"data: [DONE]\n\n"


STREAM_EVENTS = ("message_start", "content_block_start", "content_block_delta", "content_block_stop",
                 "message_delta", "message_stop")  # what ``anthropic_sse`` sends, in this order


def anthropic_sse(message: dict[str, Any]) -> Iterator[bytes]:
    """A finished Anthropic message replayed as Messages-API stream events."""
    usage = message.get("usage") or {}
    start = dict(message, content=[], stop_reason=None, stop_sequence=None,
                 usage={"input_tokens": usage.get("input_tokens", 0), "output_tokens": 0})
    yield _named("message_start", {"type": "message_start", "message": start})
    for i, block in enumerate(message.get("content") or []):
        if block.get("type") == "tool_use":
            yield _named("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": dict(block, input={})})
            delta = {"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input")).decode()}
        else:
            yield _named("content_block_start", {"type": "content_block_start", "index": i,
                                                 "content_block": {"type": "text", "text": ""}})
            delta = {"type": "text_delta", "text": block.get("text", "")}
        yield _named("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
        yield _named("content_block_stop", {"type": "content_block_stop", "index": i})
    yield _named("message_delta", {"type": "message_delta",
                                   "delta": {"stop_reason": message.get("stop_reason"),
                                             "stop_sequence": message.get("stop_sequence")},
                                   "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    yield _named("message_stop", {"type": "message_stop"})


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _named(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
