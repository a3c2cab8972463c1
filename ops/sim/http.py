"""A minimal ASGI layer: the simulator's hot path skips framework routing and validation.

Handlers take a ``Request`` and return a ``Response``, a ``Stream`` (server-sent events) or a
``Reset`` (drop the connection). Routing is one dict lookup on (method, path).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

Headers = list[tuple[bytes, bytes]]
JSON_TYPE = (b"content-type", b"application/json")
SSE_TYPE = (b"content-type", b"text/event-stream; charset=utf-8")


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    send: Any = None  # the server's send callable, used to reach the transport for resets
    receive: Any = None  # the server's receive callable, used to notice a client that went away

    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class Stream:
    status: int
    chunks: AsyncIterator[bytes]
    headers: Headers = field(default_factory=list)


class StreamCut(Exception):  # noqa: N818 - what happens, not a failure of the simulator
    """Raised by a ``Stream``'s chunks: reset the connection there, mid-answer."""


@dataclass(slots=True)
class Reset:
    """Drop the TCP connection (RST) without answering."""


Reply = Response | Stream | Reset
Handler = Callable[[Request], Awaitable[Reply]]


def json_response(status: int, data: Any, headers: Headers | None = None) -> Response:
    return Response(status, orjson.dumps(data), [JSON_TYPE, *(headers or [])])


async def read_body(receive: Callable) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def reset_connection(send: Any) -> bool:
    """Abort the socket with SO_LINGER 0 so the client sees a connection reset. False if unreachable."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


async def send_reply(reply: Reply, send: Callable) -> None:
    if isinstance(reply, Response):
        headers = [*reply.headers, (b"content-length", str(len(reply.body)).encode())]
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": reply.body})
    elif isinstance(reply, Stream):
        await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
        try:
            async for chunk in reply.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except StreamCut:
            if not reset_connection(send):
                raise ConnectionResetError("simulated connection reset mid-stream") from None
        finally:
            await reply.chunks.aclose()  # type: ignore[attr-defined]
    elif not reset_connection(send):
        # No transport to abort (an in-process test client): end the response mid-way instead.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"100")]})
        raise ConnectionResetError("simulated connection reset")
