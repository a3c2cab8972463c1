"""Turning a finished (or unfinished) job into what the caller's SDK expects.

Every answer carries the job's bookkeeping as ``x-gateway-*`` headers; a job that did not succeed
becomes an error in the caller's dialect that says what happened and what to do.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson
from starlette.concurrency import run_in_threadpool

from api.errors import error_body
from shared.errors import (
    Conflict,
    GatewayError,
    GatewayTimeout,
    InvalidRequest,
    Overloaded,
    ProviderError,
    answer_for,
)

if TYPE_CHECKING:
    from api.gateway import Gateway


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
    route = view.get("route")
    if route:
        headers["x-gateway-route"] = route_header(route)
    if view.get("cache_source_job"):  # answered from the cache: whose answer, and how close the question was
        headers["x-gateway-cache-source-job"] = str(view["cache_source_job"])
        headers["x-gateway-saved-usd"] = f"{float(view.get('saved_usd') or 0):.8f}"
    if view.get("cache_similarity") is not None:
        headers["x-gateway-cache-similarity"] = f"{float(view['cache_similarity']):.4f}"
    return headers


def screen_headers(screening: dict[str, Any] | None) -> dict[str, str]:
    """``x-gateway-screen`` on a call the injection screen flagged (``shared.privacy.screen``)."""
    screen = (screening or {}).get("screen") or {}
    if screen.get("verdict") != "flagged":
        return {}
    return {"x-gateway-screen": f"flagged; score={float(screen.get('score', 0)):.2f}; "
                                f"signals={','.join(screen.get('signals') or ())}"}


def route_header(route: dict[str, Any]) -> str:
    """``x-gateway-route`` of a routed job: its task, the tier that answered (or will first try), how
    often it went up a tier, and why it started where it did."""
    parts = [f"task={route.get('task') or '-'}", f"tier={route['tier']}", f"escalations={route['escalations']}"]
    if route.get("saving_usd") is not None:
        parts.append(f"saving_usd={route['saving_usd']:.8f}")
    return "; ".join(parts) + f"; why={route['reason']}"


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
    """A finished chat.completion replayed as OpenAI ``chat.completion.chunk`` events, every choice (``n``)."""
    base = {"id": result.get("id"), "object": "chat.completion.chunk",
            "created": result.get("created", int(time.time())), "model": result.get("model")}
    for position, choice in enumerate(result.get("choices") or [{}]):
        index = choice.get("index", position)
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
        yield _event({**base, "choices": [{"index": index, "delta": delta, "finish_reason": None}]})
        yield _event({**base, "choices": [{"index": index, "delta": {},
                                           "finish_reason": choice.get("finish_reason", "stop")}]})
    if include_usage:
        yield _event({**base, "choices": [], "usage": result.get("usage")})
    yield b"data: [DONE]\n\n"


def completion_sse(result: dict[str, Any], include_usage: bool) -> Iterator[bytes]:
    """A finished legacy ``text_completion`` replayed as its stream: each choice's text as one chunk, then
    its finish reason, as OpenAI's legacy stream shapes them."""
    base = {"id": result.get("id"), "object": "text_completion", "created": result.get("created", int(time.time())),
            "model": result.get("model")}
    for position, choice in enumerate(result.get("choices") or []):
        where = {"index": choice.get("index", position), "logprobs": None}
        yield _event({**base, "choices": [{"text": choice.get("text") or "", **where, "finish_reason": None}]})
        yield _event({**base, "choices": [{"text": "", **where, "finish_reason": choice.get("finish_reason", "stop")}]})
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


def error_event(path: str, exc: GatewayError) -> bytes:
    """A failure after a stream's first byte: an error event in the caller's dialect (OpenAI's SDK raises
    on a ``data`` line holding ``error``; Anthropic's on an ``error`` event)."""
    body = error_body(path, exc.status, exc.message, type_=exc.type, code=exc.code, param=exc.param)
    return _named("error", body) if path.startswith("/v1/messages") else _event(body)


async def keepalive(finish: asyncio.Task[Any], filler: bytes, every_s: float = 10.0) -> AsyncIterator[bytes]:
    """``filler`` every ``every_s`` until ``finish`` is done: proxies and clients see a live answer."""
    while not finish.done():
        done, _ = await asyncio.wait((finish,), timeout=every_s)
        if not done:
            yield filler


async def stream_when_done(path: str, finish: asyncio.Task[tuple[Any, dict[str, Any] | None]], job_id: str,
                           replay: Callable[[dict[str, Any]], Iterator[bytes]]) -> AsyncIterator[bytes]:
    """A stream begun before its job ended (its headers name the job): keep-alive comments while the job
    runs, then its answer as ``replay`` renders it, or an error event saying why there is none."""
    async for comment in keepalive(finish, b": waiting for the answer\n\n"):
        yield comment
    try:
        _, view = finish.result()
        result = raise_unless_succeeded(view, job_id)
    except GatewayError as exc:
        yield error_event(path, exc)
        return
    for event in replay(result):
        yield event


async def view_when_done(gw: Gateway, finish: asyncio.Task[tuple[Any, dict[str, Any] | None]],
                         job_id: str) -> AsyncIterator[bytes]:
    """A sync wait on /v1/jobs begun before its job ended (its headers name the job): JSON whitespace
    while the job runs, then the job as it is when the wait ends (finished, or still running)."""
    async for space in keepalive(finish, b"\n"):
        yield space
    try:
        _, view = finish.result()
    except GatewayError:  # refused after it was stored (Redis down at the hand-off): the store says how
        view = None
    latest = view or await run_in_threadpool(gw.view_any, job_id)
    yield orjson.dumps(latest)
