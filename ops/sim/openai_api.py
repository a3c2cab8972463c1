"""The OpenAI chat completions wire format: request parsing, bodies, errors, headers and SSE chunks."""

from __future__ import annotations

import time
from typing import Any

from ops.sim.completions import Completion
from ops.sim.faults import Outcome
from ops.sim.http import Headers, Response, json_response
from ops.sim.limits import REQUESTS, TOKENS, TOO_LARGE, AxisState, Decision
from ops.sim.wire import (
    ChatRequest,
    go_duration,
    new_id,
    positive_int,
    require,
    retry_after,
    split_for_stream,
    spread,
    sse_data,
)
from shared.tokens import count_message_tokens

FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}
AXIS_TEXT = {REQUESTS: "requests per min (RPM)", TOKENS: "tokens per min (TPM)"}
SERVER_ERRORS = {
    500: "The server had an error while processing your request. Sorry about that!",
    502: "Bad gateway.",
    503: "The engine is currently overloaded, please try again later.",
    529: "The engine is currently overloaded, please try again later.",
}


def _forced_tool(choice: Any) -> str | None:
    if choice == "required":
        return ""
    if isinstance(choice, dict):
        return (choice.get("function") or {}).get("name") or ""
    return None


def _response_schema(response_format: Any) -> dict | None:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {"type": "object"}


class OpenAIApi:
    name = "openai"

    def api_key(self, headers: dict[str, str]) -> str | None:
        auth = headers.get("authorization", "")
        return auth[7:].strip() or None if auth[:7].lower() == "bearer " else None

    def parse(self, body: Any) -> ChatRequest:
        require(isinstance(body, dict), "The request body must be a JSON object.")
        model, messages = body.get("model"), body.get("messages")
        require(isinstance(model, str) and bool(model), "you must provide a model parameter", "model")
        require(isinstance(messages, list) and bool(messages) and all(isinstance(m, dict) for m in messages),
                "'messages' must be a non-empty array of message objects.", "messages")
        max_tokens = positive_int(body, "max_completion_tokens") or positive_int(body, "max_tokens")
        n = positive_int(body, "n") or 1
        require(n <= 128, "Invalid 'n': at most 128.", "n")
        tools = body.get("tools") or None
        require(tools is None or isinstance(tools, list), "Invalid 'tools': expected an array.", "tools")
        options = body.get("stream_options") or {}
        return ChatRequest(
            model=model, messages=messages, max_tokens=max_tokens, stream=bool(body.get("stream")), n=n,
            include_usage=bool(options.get("include_usage")), tools=tools,
            forced_tool=_forced_tool(body.get("tool_choice")) if tools else None,
            response_schema=_response_schema(body.get("response_format")),
        )

    def prompt_tokens(self, req: ChatRequest, estimate_only: bool = False) -> int:
        return count_message_tokens(req.messages, req.model, tools=req.tools, estimate_only=estimate_only)

    # ---- headers and errors

    def ratelimit_headers(self, state: list[AxisState]) -> Headers:
        headers: Headers = [(b"x-request-id", new_id("req_").encode())]
        for s in state:
            if s.axis in (REQUESTS, TOKENS):
                axis = s.axis.encode()
                headers += [
                    (b"x-ratelimit-limit-" + axis, str(s.limit).encode()),
                    (b"x-ratelimit-remaining-" + axis, str(s.remaining).encode()),
                    (b"x-ratelimit-reset-" + axis, go_duration(s.reset_s).encode()),
                ]
        return headers

    def error(self, status: int, message: str, kind: str, code: str | None = None,
              param: str | None = None, headers: Headers | None = None) -> Response:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return json_response(status, body, headers)

    def rate_limited(self, decision: Decision, req: ChatRequest, org: str, headers: Headers) -> Response:
        state = {s.axis: s for s in decision.state}
        if decision.reason == TOO_LARGE:
            limit = state[TOKENS].limit if TOKENS in state else 0
            message = (f"Request too large for {req.model} in organization {org} on tokens per min (TPM): "
                       f"Limit {limit}, Requested {decision.requested}. The input or output tokens must be "
                       "reduced in order to run successfully.")
            return self.error(429, message, "tokens", "rate_limit_exceeded",
                              headers=[*headers, (b"x-should-retry", b"false")])
        axis = decision.reason or TOKENS
        s = state.get(axis)
        limit = s.limit if s else 0
        used = limit - s.remaining if s else 0
        what = AXIS_TEXT.get(axis, axis)
        message = (f"Rate limit reached for {req.model} in organization {org} on {what}: "
                   f"Limit {limit}, Used {used}, Requested {decision.requested}. Please try again in "
                   f"{go_duration(decision.retry_after)}. Visit https://platform.openai.com/account/rate-limits"
                   " to learn more.")
        wait = [(b"retry-after", retry_after(decision.retry_after).encode()),
                (b"retry-after-ms", str(int(decision.retry_after * 1000) + 1).encode())]
        return self.error(429, message, "requests" if axis == REQUESTS else "tokens", "rate_limit_exceeded",
                          headers=headers + wait)

    def fault_error(self, outcome: Outcome, model: str, headers: Headers) -> Response:
        if outcome.status == 429:
            message = (f"Rate limit reached for {model}: the service is temporarily limiting requests. "
                       f"Please try again in {go_duration(outcome.retry_after_s)}.")
            wait = [(b"retry-after", retry_after(outcome.retry_after_s).encode())]
            return self.error(429, message, "requests", "rate_limit_exceeded", headers=headers + wait)
        message = SERVER_ERRORS.get(outcome.status, "The server had an error processing your request.")
        return self.error(outcome.status, message, "server_error", None, headers=headers)

    def invalid(self, message: str, param: str | None, headers: Headers) -> Response:
        return self.error(400, message, "invalid_request_error", None, param, headers)

    def unauthorized(self, key: str | None) -> Response:
        if not key:
            message = ("You didn't provide an API key. You need to provide your API key in an Authorization "
                       "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).")
        else:
            message = f"Incorrect API key provided: {key[:3]}***{key[-4:]}."
        return self.error(401, message, "invalid_request_error", "invalid_api_key")

    def unknown_model(self, model: str) -> Response:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return self.error(404, message, "invalid_request_error", "model_not_found", "model")

    # ---- bodies

    def _message(self, c: Completion) -> dict:
        if c.tool_call:
            call = c.tool_call
            function = {"name": call.name, "arguments": call.arguments}
            return {"role": "assistant", "content": None, "refusal": None,
                    "tool_calls": [{"id": call.id, "type": "function", "function": function}]}
        if c.refusal:
            return {"role": "assistant", "content": None, "refusal": c.refusal}
        return {"role": "assistant", "content": c.text, "refusal": None}

    def usage(self, prompt: int, completions: list[Completion]) -> dict:
        output = sum(c.output_tokens for c in completions)
        return {
            "prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }

    def render(self, req: ChatRequest, completions: list[Completion], prompt: int,
               headers: Headers) -> Response:
        body = {
            "id": new_id("chatcmpl-"), "object": "chat.completion", "created": int(time.time()),
            "model": req.model,
            "choices": [
                {"index": i, "message": self._message(c), "logprobs": None, "finish_reason": FINISH[c.finish]}
                for i, c in enumerate(completions)
            ],
            "usage": self.usage(prompt, completions),
            "service_tier": "default", "system_fingerprint": "fp_sim",
        }
        return json_response(200, body, headers)

    def stream_frames(self, req: ChatRequest, completions: list[Completion], prompt: int,
                      per_event: int) -> list[tuple[int, bytes]]:
        """SSE chunks as (output tokens they carry, bytes); the engine paces them."""
        base = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk", "created": int(time.time()),
                "model": req.model, "system_fingerprint": "fp_sim"}
        if req.include_usage:
            base["usage"] = None

        def chunk(index: int, delta: dict, finish: str | None = None) -> bytes:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse_data({**base, "choices": [choice]})

        frames: list[tuple[int, bytes]] = []
        for i, c in enumerate(completions):
            frames += self._choice_frames(i, c, per_event, chunk)
        if req.include_usage:
            frames.append((0, sse_data({**base, "choices": [], "usage": self.usage(prompt, completions)})))
        frames.append((0, b"data: [DONE]\n\n"))
        return frames

    def _choice_frames(self, i: int, c: Completion, per_event: int, chunk: Any) -> list[tuple[int, bytes]]:
        if c.tool_call:
            call = c.tool_call
            function = {"name": call.name, "arguments": ""}
            head = {"role": "assistant", "content": None,
                    "tool_calls": [{"index": 0, "id": call.id, "type": "function", "function": function}]}
            args = {"tool_calls": [{"index": 0, "function": {"arguments": call.arguments}}]}
            frames = [(0, chunk(i, head)), (c.output_tokens, chunk(i, args))]
        else:
            frames = [(0, chunk(i, {"role": "assistant", "content": "", "refusal": None}))]
            pieces = split_for_stream(c.text, per_event)
            for n, piece in zip(spread(c.output_tokens, len(pieces)), pieces, strict=True):
                frames.append((n, chunk(i, {"content": piece})))
        frames.append((0, chunk(i, {}, FINISH[c.finish])))
        return frames
