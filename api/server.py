"""uvicorn's HTTP protocol with the deadlines it lacks, so a slow or careless client cannot hold a connection.

``uvicorn[standard]`` serves HTTP/1.1 with httptools; this subclass of that protocol adds:

- a head deadline: the request line and headers must be in within ``api.header_timeout_s`` of the
  connection opening, or of a request's first byte on a keep-alive connection (an idle keep-alive
  connection stays uvicorn's ``timeout_keep_alive``). Past it, and past a last look at what the
  socket holds (the api's own loop may have stalled): 408 and close.
- a head size cap: httptools has none (it buffers one header of any size), so more than
  ``api.max_header_bytes`` before the head is complete is a 431 and a close.
- a bound on lingering: when the app answers before the body is in (a 413 on Content-Length, a 401),
  uvicorn reads and drops the rest for as long as the client sends it; here for ``api.body_timeout_s``.

The body's deadline while the app reads it is ``api/limits.py``'s, which answers in the caller's dialect.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.errors import error_body
from api.limits import STALL_GRACE_S
from shared.config import Settings, get_settings


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """What ``gateway api`` passes to ``uvicorn.run`` besides the app and its address."""
    return {"http": f"{__name__}:{GatewayHttpProtocol.__name__}",  # by name: ``--workers N`` imports it
            "limit_concurrency": settings.api.max_connections, "timeout_keep_alive": settings.api.keep_alive_s}


ONE_WRITE = True  # off: each write goes out as uvicorn made it (``ops/bench_ab.py --toggle api.server:ONE_WRITE:...``)


class _OneWrite:
    """The connection's transport, but a write is held until the next one, which takes it along, or until
    the end of the loop's turn (``call_soon``): uvicorn writes a response's head and then its body, two
    packets and two wake-ups of the client where one does. The body's write sends both at once, before
    any other callback of the turn runs (one waking the attempt's thread would delay it)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        if not ONE_WRITE:
            self._transport.write(data)
        elif self._held is None:
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            held, self._held = self._held, None
            self._transport.write(held + data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        api = get_settings().api
        self.head_timeout_s, self.max_head_bytes, self.linger_s = (api.header_timeout_s, api.max_header_bytes,
                                                                   api.body_timeout_s)
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._awaiting_head = True  # the next bytes belong to a request head
        self._head_bytes = 0
        self._body_pending = False  # the current request's body is not all in

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_OneWrite(transport, self.loop))  # type: ignore[arg-type]
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._awaiting_head and self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
            self._refuse(431, f"The request line and headers are larger than the gateway's limit of "
                              f"{self.max_head_bytes} bytes.", "headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._unset_keepalive_if_required()  # a request has begun: its head has a deadline of its own
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._awaiting_head, self._head_bytes, self._body_pending = False, 0, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._awaiting_head, self._body_pending = True, False
        if self._linger_timer is not None:  # the rest of an answered body is in: the connection is idle
            self._linger_timer.cancel()
            self._linger_timer = None
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                self.timeout_keep_alive_handler)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_pending and not self.transport.is_closing():
            self._linger_timer = self.loop.call_later(self.linger_s, self.transport.close)

    def _head_timed_out(self, looked_again: bool = False) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if not looked_again:  # read what came in time first (``api.limits.STALL_GRACE_S``)
            self._head_timer = self.loop.call_later(STALL_GRACE_S, self._head_timed_out, True)
            return
        busy = self.cycle is not None and not self.cycle.response_complete  # a pipelined head: no room to answer
        if self._head_bytes and not busy:
            self._refuse(408, f"The request headers did not arrive within {self.head_timeout_s:g} s.",
                         "request_timeout")
        else:
            self.transport.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer a request whose head never completed (no app saw it), in the dialect of its path if known."""
        path = getattr(self, "url", b"").decode("latin-1")
        payload = orjson.dumps(error_body(path, status, message, type_="invalid_request_error", code=code))
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(payload))
        self.transport.write(b"".join(head) + payload)
        self.transport.close()
