"""What both API formats share: the parsed request, ids, header value formats, SSE framing."""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from shared.errors import InvalidRequest

_counter = itertools.count(1)
_prefix = os.urandom(4).hex()


def new_id(prefix: str) -> str:
    """Unique, cheap ids (``chatcmpl-...``, ``msg_...``, ``req_...``)."""
    return f"{prefix}{_prefix}{next(_counter):012x}"


@dataclass(slots=True)
class ChatRequest:
    """A completion request, whichever format it came in."""

    model: str
    messages: list[dict]
    max_tokens: int | None
    stream: bool = False
    n: int = 1
    include_usage: bool = False
    system: Any = None
    tools: list[dict] | None = None
    forced_tool: str | None = None  # a tool name, or "" for "any tool"
    response_schema: dict | None = None  # OpenAI response_format json_schema: the reply is JSON it accepts
    extra: dict = field(default_factory=dict)
    generates: bool = True  # False: an embeddings request, which produces (and is charged) no output

    def text(self) -> str:
        """Every string of the prompt, for the markers a weakness profile reads (``ops.sim.weakness``)."""
        parts = [self.system] if isinstance(self.system, str) else []
        for message in self.messages:
            content = message.get("content")
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
        return "\n".join(parts)

    def tool_schema(self, name: str) -> dict | None:
        for tool in self.tools or []:
            if tool_name(tool) == name:
                return tool.get("input_schema") or (tool.get("function") or {}).get("parameters")
        return None

    def forced_tool_name(self) -> str | None:
        """The tool the reply must call, if the request forces one (first tool for "any")."""
        if self.forced_tool is None or not self.tools:
            return None
        return self.forced_tool or tool_name(self.tools[0])


def tool_name(tool: dict) -> str:
    return tool.get("name") or (tool.get("function") or {}).get("name") or "tool"


def require(condition: bool, message: str, param: str | None = None) -> None:
    if not condition:
        raise InvalidRequest(message, param=param)


def positive_int(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
            f"Invalid '{name}': expected an integer >= 1, got {value!r}.", name)
    return value


def go_duration(seconds: float) -> str:
    """OpenAI's reset format: ``6m0s``, ``1.5s``, ``20ms``."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".")
    return f"{int(minutes)}m{text}s" if minutes else f"{text}s"


def rfc3339(seconds_from_now: float, now: float | None = None) -> str:
    """Anthropic's reset format: the UTC instant the bucket is full again."""
    instant = (now or time.time()) + seconds_from_now
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(math.ceil(instant)))


def retry_after(seconds: float) -> str:
    """Whole seconds, at least 1, as both providers send it."""
    return str(max(1, math.ceil(seconds)))


def sse_data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def sse_event(name: str, payload: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def split_for_stream(text: str, per_event: int) -> list[str]:
    """Cut a reply into SSE deltas of about ``per_event`` words each."""
    if not text:
        return []
    words = text.split(" ")
    pieces = [words[0]] + [" " + w for w in words[1:]]
    return ["".join(pieces[i:i + per_event]) for i in range(0, len(pieces), per_event)]


def spread(total: int, parts: int) -> list[int]:
    """Split ``total`` tokens over ``parts`` events, summing exactly to ``total``."""
    if parts <= 0:
        return []
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
