"""Streamed answers across dialects: provider events in, the caller's events out, and the whole answer.

A provider streams Server-Sent Events in its wire dialect: OpenAI's ``chat.completion.chunk`` objects
(``data:`` lines, ``[DONE]`` last) or Anthropic's named Messages events (``message_start``,
``content_block_*``, ``message_delta``, ``message_stop``). The caller gets the events of the dialect
it called in:

- same dialect: the events as the provider sent them, except the usage the gateway asked for itself
  (OpenAI's ``stream_options.include_usage``) when the caller did not ask for it;
- across dialects: ``ChatToMessages`` / ``MessagesToChat`` translate event by event, text and tool-call
  deltas included, and close the stream with the final usage.

Whatever the caller sees, an ``Assembler`` builds the whole answer from the provider's events in its
wire dialect (stored as the job's result, its usage settles the budget), as if it had not streamed.

Each translator is a small state machine: ``feed`` takes one provider event and returns the frames to
send (``bytes``, SSE-encoded), ``close`` those that end the stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.translate import _FINISH_TO_STOP as FINISH_TO_STOP
from shared.translate import _STOP_TO_FINISH as STOP_TO_FINISH

JSON = dict[str, Any]
DONE = b"data: [DONE]\n\n"


@dataclass(frozen=True, slots=True)
class Event:
    """One provider event: its SSE ``event`` name (None for OpenAI's) and its data, parsed."""

    name: str | None
    data: JSON | None  # None for OpenAI's ``[DONE]``


def data_frame(data: JSON) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def named_frame(name: str, data: JSON) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def frame_of(event: Event) -> bytes:
    """The event as the provider sent it (re-encoded)."""
    if event.data is None:
        return DONE
    return named_frame(event.name, event.data) if event.name else data_frame(event.data)


class Relay:
    """The caller's frames for a provider's events; same dialect unless a subclass translates."""

    def __init__(self, include_usage: bool = True) -> None:
        self.include_usage = include_usage

    def feed(self, event: Event) -> list[bytes]:
        return [frame_of(event)]

    def close(self) -> list[bytes]:
        return []

    def fail(self, code: str, message: str) -> list[bytes] | None:
        """The frames that end a stream broken off after it began (``code``, ``message``: why); None when
        the caller's dialect says it with the gateway's error event (``api.delivery.error_event``)."""
        return None


class ChatRelay(Relay):
    """OpenAI to an OpenAI caller: the usage the gateway asked for goes out only if the caller asked too."""

    def __init__(self, include_usage: bool = True) -> None:
        super().__init__(include_usage)
        self.done = False

    def close(self) -> list[bytes]:
        """``[DONE]``, unless the provider's went out already."""
        if self.done:
            return []
        self.done = True
        return [DONE]

    def feed(self, event: Event) -> list[bytes]:
        data = event.data
        if data is None:
            return self.close()
        if self.include_usage:
            return [frame_of(event)]
        if not data.get("choices") and data.get("usage") is not None:
            return []  # the usage chunk the gateway asked for, for settlement
        data.pop("usage", None)
        return [data_frame(data)]


@dataclass
class _Block:
    kind: str  # text | tool_use | skipped
    tool_index: int = -1


class MessagesToChat(Relay):
    """Anthropic events to OpenAI chunks: text and tool_use blocks become content and tool-call deltas
    (thinking blocks have no Chat Completions form and are left out); the stop reason becomes the
    finish reason, and the usage a last chunk when the caller asked for it."""

    def __init__(self, include_usage: bool = False) -> None:
        super().__init__(include_usage)
        self.base: JSON = {"id": "chatcmpl-gw", "object": "chat.completion.chunk", "created": int(time.time()),
                           "model": ""}
        self.blocks: dict[int, _Block] = {}
        self.tools = 0
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.closed = False

    def feed(self, event: Event) -> list[bytes]:
        data = event.data or {}
        kind = data.get("type") or event.name
        if kind == "message_start":
            return self._start(data.get("message") or {})
        if kind == "content_block_start":
            return self._block_start(int(data.get("index", 0)), data.get("content_block") or {})
        if kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        if kind == "message_delta":
            self._count(data.get("usage"))
            stop = (data.get("delta") or {}).get("stop_reason")
            return [self._chunk({}, STOP_TO_FINISH.get(stop or "end_turn", "stop"))]
        if kind == "message_stop":
            return self.close()
        return []  # ping, content_block_stop: nothing to say in Chat Completions

    def close(self) -> list[bytes]:
        if self.closed:
            return []
        self.closed = True
        frames = []
        if self.include_usage:
            prompt, completion = self.usage["input_tokens"], self.usage["output_tokens"]
            frames.append(data_frame({**self.base, "choices": [], "usage": {
                "prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}}))
        return [*frames, DONE]

    def _start(self, message: JSON) -> list[bytes]:
        self.base["id"] = "chatcmpl-" + str(message.get("id") or "gw").removeprefix("msg_")
        self.base["model"] = message.get("model") or ""
        self._count(message.get("usage"))
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, index: int, block: JSON) -> list[bytes]:
        kind = block.get("type")
        if kind == "text":
            self.blocks[index] = _Block("text")
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind == "tool_use":
            self.blocks[index] = _Block("tool_use", self.tools)
            self.tools += 1
            call = {"index": self.tools - 1, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        self.blocks[index] = _Block("skipped")
        return []

    def _delta(self, index: int, delta: JSON) -> list[bytes]:
        block = self.blocks.get(index)
        if block is None or block.kind == "skipped":
            return []
        if delta.get("type") == "text_delta":
            return [self._chunk({"content": delta.get("text", "")})]
        if delta.get("type") == "input_json_delta":
            call = {"index": block.tool_index, "function": {"arguments": delta.get("partial_json", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _count(self, usage: JSON | None) -> None:
        """Anthropic's input count leaves out cache reads and writes; the caller's prompt count holds them."""
        usage = usage or {}
        inputs = [usage.get(k) for k in ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")]
        if any(v is not None for v in inputs):
            self.usage["input_tokens"] = sum(int(v or 0) for v in inputs)
        if usage.get("output_tokens") is not None:
            self.usage["output_tokens"] = int(usage["output_tokens"])

    def _chunk(self, delta: JSON, finish: str | None = None) -> bytes:
        return data_frame({**self.base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                     "finish_reason": finish}]})


class ChatToMessages(Relay):
    """OpenAI chunks to Anthropic events: content deltas into a text block, each tool call into a tool_use
    block, the finish reason and the usage into ``message_delta``. Only the first choice has an
    Anthropic form (a request with ``n`` > 1 is refused across dialects before it is sent).
    ``prompt_tokens`` goes in ``message_start`` (the provider's count comes at the end)."""

    def __init__(self, prompt_tokens: int = 0) -> None:
        super().__init__(True)
        self.started = False
        self.open: tuple[str, int] | None = None  # ("text", -1) or ("tool_use", tool call index)
        self.index = -1
        self.stop = "end_turn"
        self.usage = {"input_tokens": prompt_tokens, "output_tokens": 0}
        self.closed = False

    def feed(self, event: Event) -> list[bytes]:
        if event.data is None:
            return self.close()
        frames = [] if self.started else [self._start(event.data)]
        if event.data.get("usage"):
            usage = event.data["usage"]
            self.usage = {"input_tokens": int(usage.get("prompt_tokens") or 0),
                          "output_tokens": int(usage.get("completion_tokens") or 0)}
        for choice in event.data.get("choices") or []:
            if choice.get("index", 0) == 0:
                frames += self._choice(choice)
        return frames

    def close(self) -> list[bytes]:
        if self.closed:
            return []
        self.closed = True
        frames = [] if self.started else [self._start({})]
        frames += self._close_block()
        frames.append(named_frame("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": self.stop, "stop_sequence": None}, "usage": dict(self.usage)}))
        return [*frames, named_frame("message_stop", {"type": "message_stop"})]

    def _start(self, chunk: JSON) -> bytes:
        self.started = True
        message: JSON = {"id": "msg_" + str(chunk.get("id") or "gw").removeprefix("chatcmpl-"), "type": "message",
                   "role": "assistant", "model": chunk.get("model") or "", "content": [], "stop_reason": None,
                   "stop_sequence": None, "usage": {"input_tokens": self.usage["input_tokens"], "output_tokens": 0}}
        return named_frame("message_start", {"type": "message_start", "message": message})

    def _choice(self, choice: JSON) -> list[bytes]:
        delta = choice.get("delta") or {}
        frames = []
        text = delta.get("content") or delta.get("refusal")
        if text:
            frames += self._open("text", -1, {"type": "text", "text": ""})
            frames.append(self._block_delta({"type": "text_delta", "text": text}))
        for call in delta.get("tool_calls") or []:
            function = call.get("function") or {}
            at = int(call.get("index", 0))
            if self.open != ("tool_use", at):
                frames += self._open("tool_use", at, {"type": "tool_use", "id": call.get("id") or f"toolu_{at}",
                                                      "name": function.get("name") or "", "input": {}})
            if function.get("arguments"):
                frames.append(self._block_delta({"type": "input_json_delta", "partial_json": function["arguments"]}))
        if choice.get("finish_reason"):
            self.stop = "refusal" if delta.get("refusal") else FINISH_TO_STOP.get(choice["finish_reason"], "end_turn")
            frames += self._close_block()
        return frames

    def _open(self, kind: str, at: int, block: JSON) -> list[bytes]:
        if self.open == (kind, at):
            return []
        frames = self._close_block()
        self.open, self.index = (kind, at), self.index + 1
        return [*frames, named_frame("content_block_start", {"type": "content_block_start", "index": self.index,
                                                             "content_block": block})]

    def _block_delta(self, delta: JSON) -> bytes:
        return named_frame("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                   "delta": delta})

    def _close_block(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [named_frame("content_block_stop", {"type": "content_block_stop", "index": self.index})]


# -- the whole answer, from the provider's events --------------------------------------------------


@dataclass
class _Choice:
    role: str = "assistant"
    content: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, JSON] = field(default_factory=dict)
    finish_reason: str | None = None


class ChatAssembler:
    """OpenAI chunks to the ``chat.completion`` the same call would have answered without streaming."""

    def __init__(self) -> None:
        self.head: JSON = {}
        self.choices: dict[int, _Choice] = {}
        self.usage: JSON | None = None

    def feed(self, event: Event) -> None:
        chunk = event.data
        if chunk is None:
            return
        for key in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(key) is not None:
                self.head[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            self._add(self.choices.setdefault(int(choice.get("index", 0)), _Choice()), choice)

    def _add(self, into: _Choice, choice: JSON) -> None:
        delta = choice.get("delta") or {}
        into.role = delta.get("role") or into.role
        if delta.get("content"):
            into.content.append(delta["content"])
        if delta.get("refusal"):
            into.refusal.append(delta["refusal"])
        for call in delta.get("tool_calls") or []:
            at = int(call.get("index", 0))
            whole = into.tool_calls.setdefault(at, {"id": "", "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
            whole["id"] = call.get("id") or whole["id"]
            function = call.get("function") or {}
            whole["function"]["name"] += function.get("name") or ""
            whole["function"]["arguments"] += function.get("arguments") or ""
        into.finish_reason = choice.get("finish_reason") or into.finish_reason

    def body(self) -> JSON:
        choices = []
        for index, c in sorted(self.choices.items()):
            message: JSON = {"role": c.role, "content": "".join(c.content) if c.content or not c.tool_calls else None,
                             "refusal": "".join(c.refusal) or None}
            if c.tool_calls:
                message["tool_calls"] = [call for _, call in sorted(c.tool_calls.items())]
            choices.append({"index": index, "message": message, "logprobs": None,
                            "finish_reason": c.finish_reason or "stop"})
        return {"id": self.head.get("id", "chatcmpl-gw"), "object": "chat.completion",
                "created": self.head.get("created", int(time.time())), "model": self.head.get("model", ""),
                "choices": choices, "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": 0,
                                                            "total_tokens": 0},
                **{k: self.head[k] for k in ("system_fingerprint", "service_tier") if k in self.head}}


class CompletionAssembler:
    """Legacy ``text_completion`` chunks to the ``text_completion`` the same call would have answered whole."""

    def __init__(self) -> None:
        self.head: JSON = {}
        self.texts: dict[int, list[str]] = {}
        self.finish: dict[int, str] = {}
        self.usage: JSON | None = None

    def feed(self, event: Event) -> None:
        chunk = event.data
        if chunk is None:
            return
        self.head.update({k: chunk[k] for k in ("id", "created", "model", "system_fingerprint") if chunk.get(k)})
        self.usage = chunk.get("usage") or self.usage
        for choice in chunk.get("choices") or []:
            at = int(choice.get("index", 0))
            self.texts.setdefault(at, []).append(choice.get("text") or "")
            if choice.get("finish_reason"):
                self.finish[at] = choice["finish_reason"]

    def body(self) -> JSON:
        choices = [{"text": "".join(parts), "index": at, "logprobs": None, "finish_reason": self.finish.get(at, "stop")}
                   for at, parts in sorted(self.texts.items())]
        return {"object": "text_completion", "id": "cmpl-gw", "created": int(time.time()), "model": "", **self.head,
                "choices": choices, "usage": self.usage or {"prompt_tokens": 0, "completion_tokens": 0,
                                                            "total_tokens": 0}}


class MessagesAssembler:
    """Anthropic events to the message the same call would have answered without streaming."""

    def __init__(self) -> None:
        self.message: JSON = {"id": "msg_gw", "type": "message", "role": "assistant", "model": "", "content": [],
                              "stop_reason": None, "stop_sequence": None, "usage": {}}
        self.blocks: dict[int, JSON] = {}
        self.partial_json: dict[int, list[str]] = {}

    def feed(self, event: Event) -> None:
        data = event.data or {}
        kind = data.get("type") or event.name
        if kind == "message_start":
            self.message.update({k: v for k, v in (data.get("message") or {}).items() if k != "content"})
        elif kind == "content_block_start":
            self.blocks[int(data.get("index", 0))] = dict(data.get("content_block") or {})
        elif kind == "content_block_delta":
            self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            self.message["stop_reason"] = delta.get("stop_reason")
            self.message["stop_sequence"] = delta.get("stop_sequence")
            self.message["usage"] = {**(self.message.get("usage") or {}),
                                     **{k: v for k, v in (data.get("usage") or {}).items() if v is not None}}

    def _delta(self, index: int, delta: JSON) -> None:
        block = self.blocks.setdefault(index, {"type": "text", "text": ""})
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta.get("text", "")
        elif kind == "input_json_delta":
            self.partial_json.setdefault(index, []).append(delta.get("partial_json", ""))
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
        elif kind == "signature_delta":
            block["signature"] = delta.get("signature", "")
        elif kind == "citations_delta":
            block.setdefault("citations", []).append(delta.get("citation"))

    def body(self) -> JSON:
        for index, parts in self.partial_json.items():
            text = "".join(parts)
            self.blocks[index]["input"] = orjson.loads(text) if text.strip() else {}
        return {**self.message, "content": [block for _, block in sorted(self.blocks.items())]}
