"""Reading a streamed answer as a caller does: when its first content came, what it said, how it ended.

The same reader serves both dialects (OpenAI ``chat.completion.chunk`` events ending in ``[DONE]``;
Anthropic's ``message_start`` ... ``message_stop``) and both benchmarks: the storm measures time to
first content and total latency of its streaming copilot calls, the chaos benchmark whether a caller
open at a kill got the full answer or a clean error event, never a hang.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson


@dataclass
class Streamed:
    """One streamed answer as its caller read it. ``ended``: "done" (the dialect's last event), "error"
    (an error event: the dialect's clean failure), or None (the connection ended without either)."""

    status: int = 0
    job_id: str | None = None
    first_content: float | None = None  # wall time of the first content delta
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    ended: str | None = None
    error: dict[str, Any] | None = None

    @property
    def content(self) -> str:
        return "".join(self.text)


def _openai(data: bytes, out: Streamed) -> None:
    if data.strip() == b"[DONE]":
        out.ended = "done"
        return
    chunk = orjson.loads(data)
    if "error" in chunk:
        out.ended, out.error = "error", chunk["error"]
        return
    for choice in chunk.get("choices") or []:
        piece = (choice.get("delta") or {}).get("content")
        if piece:
            out.first_content = out.first_content or time.time()
            out.text.append(piece)
    if chunk.get("usage"):
        out.usage = chunk["usage"]


def _anthropic(name: str | None, data: bytes, out: Streamed) -> None:
    event = orjson.loads(data)
    kind = name or event.get("type")
    if kind == "error":
        out.ended, out.error = "error", event.get("error") or event
    elif kind == "content_block_delta":
        piece = (event.get("delta") or {}).get("text")
        if piece:
            out.first_content = out.first_content or time.time()
            out.text.append(piece)
    elif kind == "message_delta" and event.get("usage"):
        out.usage = event["usage"]
    elif kind == "message_stop":
        out.ended = "done"


async def read_sse(response: httpx.Response, anthropic: bool, out: Streamed) -> None:
    """Read ``response``'s events into ``out`` until the dialect's last event or an error event."""
    name: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data = line[5:].strip().encode()
            if anthropic:
                _anthropic(name, data, out)
            else:
                _openai(data, out)
            if out.ended:
                return
        elif not line:
            name = None


async def stream(client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str],
                 anthropic: bool = False) -> Streamed:
    """POST ``body`` with ``stream: true`` and read the answer (transport errors are the caller's)."""
    out = Streamed()
    async with client.stream("POST", url, json={**body, "stream": True}, headers=headers) as response:
        out.status, out.job_id = response.status_code, response.headers.get("x-gateway-job-id")
        if response.status_code != 200:
            await response.aread()
            out.ended, out.error = "error", {"status": response.status_code, "body": response.text[:300]}
            return out
        await read_sse(response, anthropic, out)
    return out


def answer_text(result: dict[str, Any] | None) -> str | None:
    """The text of a stored answer in either dialect (a chat.completion or an Anthropic message)."""
    if not result:
        return None
    if result.get("choices"):
        return (result["choices"][0].get("message") or {}).get("content") or ""
    return "".join(block.get("text", "") for block in result.get("content") or [] if block.get("type") == "text")
