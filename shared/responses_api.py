"""OpenAI's Responses API over chat: its request as a chat request, a chat answer as a ``response``, that
response replayed as the Responses stream events, and a chat stream relayed as them while it comes
(``ChatToResponses``). Pure functions over plain dicts, and one translator.

No deployment the gateway knows serves ``/v1/responses`` itself, so a Responses request is translated
to chat (``shared.dialects``) and the answer back. What chat cannot say is refused with a 400 naming
the field, never dropped: ``previous_response_id`` and ``conversation`` (the gateway keeps no
conversation state: send the whole conversation in ``input``), ``background``, built-in tools (web
search, file search, code interpreter ...), and input items other than messages, function calls and
their outputs. Hints with no place in chat are left out: ``store``, ``metadata``, ``truncation``,
``include`` of nothing.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import orjson

from shared.errors import InvalidRequest, echo
from shared.stream_translate import Event, Relay

JSON = dict[str, Any]

# Responses fields chat has under another name (or the same one), and hints that need no place there.
_RENAMED = {"max_output_tokens": "max_completion_tokens"}
_SAME = frozenset({"model", "temperature", "top_p", "user", "parallel_tool_calls", "prompt_cache_key",
                   "safety_identifier", "service_tier", "top_logprobs", "stream"})
_HINTS = frozenset({"store", "metadata", "truncation", "stream_options"})
_HANDLED = frozenset({"input", "instructions", "tools", "tool_choice", "text", "reasoning", "include"})
_STATEFUL = ("previous_response_id", "conversation")


class Untranslatable(InvalidRequest):
    code = "unsupported_parameter"


def to_chat(request: JSON) -> JSON:
    """The chat request for a Responses request (see the module docstring)."""
    for name in _STATEFUL:
        if request.get(name) is not None:
            raise Untranslatable(f"{name}: the gateway keeps no conversation state between calls; send the whole "
                                 "conversation in input (earlier turns as messages) instead", param=name)
    unknown = [k for k, v in request.items() if v is not None and k not in _RENAMED and k not in _SAME
               and k not in _HINTS and k not in _HANDLED]
    if unknown:
        raise Untranslatable(f"{unknown[0]}: the gateway serves the Responses API through chat completions, "
                             "which have no equivalent for this field; remove it", param=unknown[0])
    chat: JSON = {_RENAMED.get(k, k): v for k, v in request.items()
                  if v is not None and (k in _RENAMED or k in _SAME) and k != "stream"}
    chat["messages"] = _instructions(request.get("instructions")) + _messages(request.get("input"))
    chat.update(_tools(request))
    chat.update(_text_format(request.get("text")))
    chat.update(_reasoning(request.get("reasoning")))
    if chat.get("top_logprobs") is not None:
        chat["logprobs"] = True
    if request.get("include"):
        raise Untranslatable("include: extra output (reasoning content, logprobs, search results) is not "
                             "available through chat completions; remove it", param="include")
    return chat


def _instructions(instructions: Any) -> list[JSON]:
    if instructions is None:
        return []
    if not isinstance(instructions, str):
        raise InvalidRequest("instructions: must be a string", param="instructions")
    return [{"role": "system", "content": instructions}]


def _messages(given: Any) -> list[JSON]:
    if isinstance(given, str):
        return [{"role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise InvalidRequest("input: a string, or a non-empty list of input items", param="input")
    out: list[JSON] = []
    for index, item in enumerate(given):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{index}]: an input item is an object", param=f"input[{index}]")
        out.extend(_item(item, index))
    return out


def _item(item: JSON, index: int) -> list[JSON]:
    kind = item.get("type", "message")
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(f"input[{index}].role: user, assistant, system or developer, not {echo(role)}",
                                 param=f"input[{index}].role")
        return [{"role": role, "content": _content(item.get("content"), index)}]
    if kind == "function_call":
        call = {"id": item.get("call_id"), "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
        return [{"role": "assistant", "content": None, "tool_calls": [call]}]
    if kind == "function_call_output":
        output = item.get("output")
        return [{"role": "tool", "tool_call_id": item.get("call_id"),
                 "content": output if isinstance(output, str) else json.dumps(output)}]
    raise Untranslatable(f"input[{index}].type: {echo(kind)} items cannot be sent through chat completions; "
                         "use message, function_call or function_call_output items", param=f"input[{index}]")


def _content(content: Any, index: int) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"input[{index}].content: a string or a list of content parts",
                             param=f"input[{index}].content")
    parts: list[JSON] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image" and part.get("image_url"):
            parts.append({"type": "image_url", "image_url": {"url": part["image_url"],
                                                             **({"detail": part["detail"]} if part.get("detail")
                                                                else {})}})
        else:
            raise Untranslatable(f"input[{index}].content: part type {echo(kind)} cannot be sent through chat "
                                 "completions; use input_text or input_image (by URL)",
                                 param=f"input[{index}].content")
    return parts


def _tools(request: JSON) -> JSON:
    out: JSON = {}
    tools = request.get("tools")
    if tools:
        out["tools"] = [_tool(tool, i) for i, tool in enumerate(tools)]
    choice = request.get("tool_choice")
    if isinstance(choice, str):
        out["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        raise Untranslatable("tool_choice: auto, none, required or a function", param="tool_choice")
    return out


def _tool(tool: Any, index: int) -> JSON:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise Untranslatable(f"tools[{index}]: built-in tools ({echo(kind)}) are not available through the gateway; "
                             "only function tools are", param=f"tools[{index}]")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": function}


def _text_format(text: Any) -> JSON:
    if not isinstance(text, dict):
        return {}
    out: JSON = {}
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        spec = {k: fmt[k] for k in ("name", "schema", "strict", "description") if fmt.get(k) is not None}
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif isinstance(fmt, dict) and fmt.get("type") in ("json_object", "text"):
        out["response_format"] = {"type": fmt["type"]}
    if text.get("verbosity") is not None:
        out["verbosity"] = text["verbosity"]
    return out


def _reasoning(reasoning: Any) -> JSON:
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        return {"reasoning_effort": reasoning["effort"]}
    return {}


# --------------------------------------------------------------------------- chat answer -> response


def from_chat(result: JSON, request: JSON) -> JSON:
    """The ``response`` object for a chat.completion ``result`` answering the Responses ``request``."""
    choice = (result.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output: list[JSON] = []
    text = message.get("content")
    if isinstance(text, list):
        text = "".join(p.get("text", "") for p in text if isinstance(p, dict))
    if text or message.get("refusal") or not message.get("tool_calls"):
        part = ({"type": "refusal", "refusal": message["refusal"]} if message.get("refusal") and not text
                else {"type": "output_text", "text": text or "", "annotations": [], "logprobs": []})
        output.append({"type": "message", "id": f"msg_{uuid.uuid4().hex}", "status": "completed",
                       "role": "assistant", "content": [part]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.get("id"),
                       "name": function.get("name"), "arguments": function.get("arguments") or "{}",
                       "status": "completed"})
    cut = choice.get("finish_reason") == "length"
    return {
        "id": "resp_" + str(result.get("id") or uuid.uuid4().hex).removeprefix("chatcmpl-"),
        "object": "response", "created_at": result.get("created") or int(time.time()),
        "status": "incomplete" if cut else "completed",
        "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
        "error": None, "model": result.get("model") or request.get("model"), "output": output,
        "instructions": request.get("instructions"), "max_output_tokens": request.get("max_output_tokens"),
        "parallel_tool_calls": request.get("parallel_tool_calls", True), "previous_response_id": None,
        "temperature": request.get("temperature"), "top_p": request.get("top_p"),
        "tool_choice": request.get("tool_choice", "auto"), "tools": request.get("tools") or [],
        "text": request.get("text") or {"format": {"type": "text"}}, "metadata": request.get("metadata") or {},
        "store": False, "usage": _usage(result.get("usage") or {}),
    }


def _usage(usage: JSON) -> JSON:
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    reasoning = int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": prompt + completion}


# --------------------------------------------------------------------------- response -> stream events


def stream_events(response: JSON) -> Iterator[bytes]:
    """A finished ``response`` replayed as the Responses stream: created, each output item with its
    text as one delta (or its arguments), completed (``incomplete`` when it was cut)."""
    seq = iter(range(1_000_000))
    pending = dict(response, status="in_progress", output=[], usage=None, incomplete_details=None)
    yield _sse("response.created", {"response": pending}, seq)
    yield _sse("response.in_progress", {"response": pending}, seq)
    for index, item in enumerate(response.get("output") or []):
        yield from _item_events(item, index, seq)
    final = "response.incomplete" if response.get("status") == "incomplete" else "response.completed"
    yield _sse(final, {"response": response}, seq)


def _item_events(item: JSON, index: int, seq: Iterator[int]) -> Iterator[bytes]:
    where = {"output_index": index, "item_id": item["id"]}
    if item["type"] == "function_call":
        yield _sse("response.output_item.added", {"output_index": index, "item": dict(item, arguments="",
                                                                                       status="in_progress")}, seq)
        yield _sse("response.function_call_arguments.delta", {**where, "delta": item["arguments"]}, seq)
        yield _sse("response.function_call_arguments.done", {**where, "arguments": item["arguments"]}, seq)
    else:
        yield _sse("response.output_item.added", {"output_index": index, "item": dict(item, content=[],
                                                                                       status="in_progress")}, seq)
        for part_index, part in enumerate(item.get("content") or []):
            yield from _part_events(part, {**where, "content_index": part_index}, seq)
    yield _sse("response.output_item.done", {"output_index": index, "item": item}, seq)


def _part_events(part: JSON, where: JSON, seq: Iterator[int]) -> Iterator[bytes]:
    empty = dict(part, text="") if part["type"] == "output_text" else dict(part, refusal="")
    yield _sse("response.content_part.added", {**where, "part": empty}, seq)
    if part["type"] == "output_text":
        yield _sse("response.output_text.delta", {**where, "delta": part["text"], "logprobs": []}, seq)
        yield _sse("response.output_text.done", {**where, "text": part["text"], "logprobs": []}, seq)
    else:
        yield _sse("response.refusal.delta", {**where, "delta": part["refusal"]}, seq)
        yield _sse("response.refusal.done", {**where, "refusal": part["refusal"]}, seq)
    yield _sse("response.content_part.done", {**where, "part": part}, seq)


def _sse(kind: str, data: JSON, seq: Iterator[int]) -> bytes:
    body = {"type": kind, "sequence_number": next(seq), **data}
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(body) + b"\n\n"


# --------------------------------------------------------------------------- chat stream -> live stream events

# What ``from_chat`` reads of the request, kept with a streamed job (``JobSpec.stream``) so that its
# stream can be translated wherever it is relayed, a resume included.
_RESPONSE_FIELDS = ("model", "instructions", "max_output_tokens", "parallel_tool_calls", "temperature", "top_p",
                    "tool_choice", "tools", "text", "metadata")


def relay_request(request: JSON) -> JSON:
    return {k: request[k] for k in _RESPONSE_FIELDS if k in request}


class ChatToResponses(Relay):
    """A provider's stream, as chat chunks (``chat``), relayed as the Responses stream as it comes: created
    at the first chunk, each output item added when it begins (the message at its first text, a
    function call at its first chunk) with its text or argument deltas as they arrive, then each item
    done and the completed ``response`` (``from_chat`` of what was streamed, every item keeping the id
    and place it streamed under: the SDK checks both). A stream that breaks off ends with
    ``response.failed``, as OpenAI ends one (``fail``)."""

    def __init__(self, chat: Relay, request: JSON) -> None:
        super().__init__()
        self.chat = chat
        self.request = request
        self.seq = itertools.count()
        self.head: JSON | None = None  # the chat stream's id, created and model
        self.text: list[str] = []
        self.item_id = ""  # the message item, once its text began
        self.message_index = -1
        self.calls: dict[int, JSON] = {}  # by chat tool call index: the function_call item, and its output_index
        self.placed = 0  # output items added so far
        self.finish: str | None = None
        self.usage: JSON | None = None

    def feed(self, event: Event) -> list[bytes]:
        return [out for frame in self.chat.feed(event) for out in self._chunk(frame)]

    def close(self) -> list[bytes]:
        out = [f for frame in self.chat.close() for f in self._chunk(frame)]
        response = from_chat(self._result(), self.request)
        response["output"], live = self._placed(response["output"])
        for index, item in enumerate(response["output"]):
            if index not in live:
                out += list(_item_events(item, index, self.seq))
            elif item["type"] == "message":
                out += self._text_done(item, index)
            else:
                where = {"output_index": index, "item_id": item["id"]}
                out += [_sse("response.function_call_arguments.done", {**where, "arguments": item["arguments"]},
                             self.seq),
                        _sse("response.output_item.done", {"output_index": index, "item": item}, self.seq)]
        final = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        return [*out, _sse(final, {"response": response}, self.seq)]

    def fail(self, code: str, message: str) -> list[bytes]:
        """``response.failed``: the response so far (its items ``incomplete``), failed with ``error``.
        OpenAI's error codes are a closed list: a rate limit is ``rate_limit_exceeded``, the rest
        ``server_error``; the gateway's own code leads the message."""
        out = [] if self.head is not None else self._created({})
        response = from_chat(self._result(), self.request)
        items, live = self._placed(response["output"])
        error = {"code": "rate_limit_exceeded" if "rate_limit" in code else "server_error",
                 "message": f"{code}: {message}"}
        failed = dict(response, status="failed", error=error, usage=None,
                      output=[dict(item, status="incomplete") for index, item in enumerate(items) if index in live])
        return [*out, _sse("response.failed", {"response": failed}, self.seq)]

    def _placed(self, items: list[JSON]) -> tuple[list[JSON], set[int]]:
        """``from_chat``'s items with the ids and places they streamed under (those that did not stream
        after them), and the places of those that streamed."""
        placed: dict[int, JSON] = {}
        calls = iter(sorted(self.calls.items()))
        rest = []
        for item in items:
            if item["type"] == "message" and self.item_id:
                placed[self.message_index] = dict(item, id=self.item_id)
            elif item["type"] == "function_call" and (streamed := next(calls, None)) is not None:
                placed[streamed[1]["output_index"]] = dict(item, id=streamed[1]["id"])
            else:
                rest.append(item)
        return [placed[i] for i in sorted(placed)] + rest, set(range(len(placed)))

    def _chunk(self, frame: bytes) -> list[bytes]:
        if not frame.startswith(b"data: {"):
            return []  # [DONE]: the end comes with ``close``
        chunk = orjson.loads(frame[len(b"data: "):])
        out = self._created(chunk) if self.head is None else []
        for choice in chunk.get("choices") or []:
            out += self._delta(choice.get("delta") or {})
            self.finish = choice.get("finish_reason") or self.finish
        self.usage = chunk.get("usage") or self.usage
        return out

    def _created(self, chunk: JSON) -> list[bytes]:
        """The first events; the response's id is fixed here (the SDK refuses a stream whose id changes)."""
        self.head = {k: chunk.get(k) for k in ("id", "created", "model")}
        self.head["id"] = self.head["id"] or f"chatcmpl-{uuid.uuid4().hex}"
        pending = dict(from_chat(self.head, self.request), status="in_progress", output=[], usage=None,
                       incomplete_details=None)
        return [_sse("response.created", {"response": pending}, self.seq),
                _sse("response.in_progress", {"response": pending}, self.seq)]

    def _delta(self, delta: JSON) -> list[bytes]:
        out = []
        text = delta.get("content")
        if text:
            out += [] if self.item_id else self._message_added()
            self.text.append(text)
            where = {"output_index": self.message_index, "item_id": self.item_id, "content_index": 0}
            out.append(_sse("response.output_text.delta", {**where, "delta": text, "logprobs": []}, self.seq))
        for call in delta.get("tool_calls") or []:
            out += self._call_delta(call)
        return out

    def _call_delta(self, call: JSON) -> list[bytes]:
        """A function call's item when its first chunk comes, then each piece of its arguments."""
        function = call.get("function") or {}
        into = self.calls.get(int(call.get("index") or 0))
        out = []
        if into is None:
            into = self.calls[int(call.get("index") or 0)] = {
                "type": "function_call", "id": f"fc_{uuid.uuid4().hex}", "call_id": call.get("id"),
                "name": function.get("name"), "arguments": "", "status": "in_progress", "output_index": self.placed}
            self.placed += 1
            item = {k: v for k, v in into.items() if k != "output_index"}
            out.append(_sse("response.output_item.added", {"output_index": into["output_index"], "item": item},
                            self.seq))
        into["call_id"] = into["call_id"] or call.get("id")
        into["name"] = into["name"] or function.get("name")
        if function.get("arguments"):
            into["arguments"] += function["arguments"]
            out.append(_sse("response.function_call_arguments.delta", {
                "output_index": into["output_index"], "item_id": into["id"], "delta": function["arguments"]},
                self.seq))
        return out

    def _message_added(self) -> list[bytes]:
        self.item_id, self.message_index = f"msg_{uuid.uuid4().hex}", self.placed
        self.placed += 1
        item = {"type": "message", "id": self.item_id, "status": "in_progress", "role": "assistant", "content": []}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        where = {"output_index": self.message_index, "item_id": self.item_id, "content_index": 0}
        return [_sse("response.output_item.added", {"output_index": self.message_index, "item": item}, self.seq),
                _sse("response.content_part.added", {**where, "part": part}, self.seq)]

    def _text_done(self, item: JSON, index: int) -> list[bytes]:
        where = {"output_index": index, "item_id": item["id"], "content_index": 0}
        part = item["content"][0]
        return [_sse("response.output_text.done", {**where, "text": part.get("text", ""), "logprobs": []}, self.seq),
                _sse("response.content_part.done", {**where, "part": part}, self.seq),
                _sse("response.output_item.done", {"output_index": index, "item": item}, self.seq)]

    def _result(self) -> JSON:
        """The chat.completion of what was streamed, for ``from_chat``."""
        calls = [{"id": c["call_id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                 for _, c in sorted(self.calls.items())]
        message = {"role": "assistant", "content": "".join(self.text) or None, "tool_calls": calls or None}
        return {**(self.head or {}), "choices": [{"index": 0, "message": message, "finish_reason": self.finish}],
                "usage": self.usage or {}}
