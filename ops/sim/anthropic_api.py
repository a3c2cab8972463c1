"""The Anthropic Messages wire format: request parsing, bodies, errors, headers and SSE events."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ops.sim.completions import Completion
from ops.sim.faults import Outcome
from ops.sim.http import Headers, Response, json_response
from ops.sim.limits import INPUT, OUTPUT, REQUESTS, TOKENS, TOO_LARGE, AxisState, Decision
from ops.sim.wire import (
    ChatRequest,
    new_id,
    positive_int,
    require,
    retry_after,
    rfc3339,
    split_for_stream,
    spread,
    sse_event,
)
from shared.tokens import count_message_tokens

STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}
HEADER_AXIS = {REQUESTS: b"requests", INPUT: b"input-tokens", OUTPUT: b"output-tokens"}
AXIS_TEXT = {REQUESTS: "requests", INPUT: "input tokens", OUTPUT: "output tokens", TOKENS: "tokens"}
ERROR_TYPE = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
    502: "api_error", 503: "overloaded_error", 529: "overloaded_error",
}


def _forced_tool(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    if choice.get("type") == "any":
        return ""
    if choice.get("type") == "tool":
        return choice.get("name") or ""
    return None


class AnthropicApi:
    name = "anthropic"

    def api_key(self, headers: dict[str, str]) -> str | None:
        key = headers.get("x-api-key")
        if key:
            return key
        auth = headers.get("authorization", "")
        return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None

    def parse(self, body: Any) -> ChatRequest:
        require(isinstance(body, dict), "The request body must be a JSON object.")
        model, messages = body.get("model"), body.get("messages")
        require(isinstance(model, str) and bool(model), "model: Field required", "model")
        require(isinstance(messages, list) and bool(messages) and all(isinstance(m, dict) for m in messages),
                "messages: at least one message is required", "messages")
        max_tokens = positive_int(body, "max_tokens")
        require(max_tokens is not None, "max_tokens: Field required", "max_tokens")
        tools = body.get("tools") or None
        require(tools is None or isinstance(tools, list), "tools: Input should be a valid list", "tools")
        return ChatRequest(
            model=model, messages=messages, max_tokens=max_tokens, stream=bool(body.get("stream")),
            system=body.get("system"), tools=tools,
            forced_tool=_forced_tool(body.get("tool_choice")) if tools else None,
            extra={"thinking": True} if isinstance(body.get("thinking"), dict)
            and body["thinking"].get("type") == "enabled" else {},
        )

    def prompt_tokens(self, req: ChatRequest, estimate_only: bool = False) -> int:
        messages = req.messages
        if req.system:
            messages = [{"role": "system", "content": req.system}, *messages]
        return count_message_tokens(messages, req.model, tools=req.tools, estimate_only=estimate_only)

    # ---- headers and errors

    def ratelimit_headers(self, state: list[AxisState]) -> Headers:
        now = time.time()
        headers: Headers = [(b"request-id", new_id("req_").encode())]
        tightest: AxisState | None = None
        for s in state:
            if s.axis != REQUESTS and (tightest is None or s.remaining < tightest.remaining):
                tightest = s
            name = HEADER_AXIS.get(s.axis)
            if name:
                headers += self._axis_headers(name, s, now)
        if tightest is not None:
            headers += self._axis_headers(b"tokens", tightest, now)
        return headers

    @staticmethod
    def _axis_headers(name: bytes, s: AxisState, now: float) -> Headers:
        prefix = b"anthropic-ratelimit-" + name
        return [
            (prefix + b"-limit", str(s.limit).encode()),
            (prefix + b"-remaining", str(s.remaining).encode()),
            (prefix + b"-reset", rfc3339(s.reset_s, now).encode()),
        ]

    def error(self, status: int, message: str, headers: Headers | None = None) -> Response:
        kind = ERROR_TYPE.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}, "request_id": new_id("req_")}
        return json_response(status, body, headers)

    def rate_limited(self, decision: Decision, req: ChatRequest, org: str, headers: Headers) -> Response:
        state = {s.axis: s for s in decision.state}
        if decision.reason == TOO_LARGE:
            message = (f"This request asks for {decision.requested} tokens, more than the per-minute "
                       f"limit of organization {org} for {req.model}; it can never be served. Reduce the prompt "
                       "or max_tokens.")
            return self.error(429, message, [*headers, (b"x-should-retry", b"false")])
        axis = decision.reason or INPUT
        limit = state[axis].limit if axis in state else 0
        message = (f"This request would exceed the rate limit for your organization ({org}) of {limit} "
                   f"{AXIS_TEXT.get(axis, axis)} per minute for {req.model}. Check the "
                   "anthropic-ratelimit-* response headers for current usage, then retry later.")
        wait = (b"retry-after", retry_after(decision.retry_after).encode())
        return self.error(429, message, [*headers, wait])

    def fault_error(self, outcome: Outcome, model: str, headers: Headers) -> Response:
        if outcome.status == 429:
            wait = [(b"retry-after", retry_after(outcome.retry_after_s).encode())]
            return self.error(429, "Number of requests has exceeded your rate limit. Please try again later.",
                              headers + wait)
        if ERROR_TYPE.get(outcome.status) == "overloaded_error":
            return self.error(outcome.status, "Overloaded", headers)
        return self.error(outcome.status, "Internal server error", headers)

    def invalid(self, message: str, param: str | None, headers: Headers) -> Response:
        return self.error(400, message, headers)

    def unauthorized(self, key: str | None) -> Response:
        return self.error(401, "invalid x-api-key" if key else "x-api-key header is required")

    def unknown_model(self, model: str) -> Response:
        return self.error(404, f"model: {model}")

    # ---- bodies

    @staticmethod
    def _block(c: Completion) -> dict:
        if c.tool_call:
            call = c.tool_call
            arguments = orjson.loads(call.arguments)
            return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}
        return {"type": "text", "text": c.text}

    @staticmethod
    def usage(prompt: int, output: int) -> dict:
        return {"input_tokens": prompt, "output_tokens": output, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "service_tier": "standard"}

    def render(self, req: ChatRequest, completions: list[Completion], prompt: int,
               headers: Headers) -> Response:
        c = completions[0]
        content = [self._block(c)]
        if req.extra.get("thinking"):  # extended thinking: a signed block the caller must send back unchanged
            content.insert(0, {"type": "thinking", "thinking": "The simulator thinks.", "signature": new_id("sig_")})
        body = {
            "id": new_id("msg_"), "type": "message", "role": "assistant", "model": req.model,
            "content": content, "stop_reason": STOP[c.finish], "stop_sequence": None,
            "usage": self.usage(prompt, c.output_tokens),
        }
        return json_response(200, body, headers)

    def stream_frames(self, req: ChatRequest, completions: list[Completion], prompt: int,
                      per_event: int) -> list[tuple[int, bytes]]:
        c = completions[0]
        start: dict[str, Any] = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": req.model,
                 "content": [], "stop_reason": None, "stop_sequence": None, "usage": self.usage(prompt, 1)}
        frames = [(0, sse_event("message_start", {"type": "message_start", "message": start}))]
        if c.tool_call:
            call = c.tool_call
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            deltas = [(c.output_tokens, {"type": "input_json_delta", "partial_json": call.arguments})]
        else:
            block = {"type": "text", "text": ""}
            pieces = split_for_stream(c.text, per_event)
            deltas = [(n, {"type": "text_delta", "text": p})
                      for n, p in zip(spread(c.output_tokens, len(pieces)), pieces, strict=True)]
        frames.append((0, sse_event("content_block_start",
                                    {"type": "content_block_start", "index": 0, "content_block": block})))
        frames.append((0, sse_event("ping", {"type": "ping"})))
        for n, delta in deltas:
            frames.append((n, sse_event("content_block_delta",
                                        {"type": "content_block_delta", "index": 0, "delta": delta})))
        frames.append((0, sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})))
        end = {"type": "message_delta", "delta": {"stop_reason": STOP[c.finish], "stop_sequence": None},
               "usage": {"input_tokens": prompt, "output_tokens": c.output_tokens}}
        frames.append((0, sse_event("message_delta", end)))
        frames.append((0, sse_event("message_stop", {"type": "message_stop"})))
        return frames
