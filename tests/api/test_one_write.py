"""The api sends a response's head with its body, in one write (``api.server._OneWrite``), and a
streamed response still leaves frame by frame, each by the end of the loop turn that made it."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from api.server import _OneWrite
from tests.api.servers import PATIENCE_S, serving


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_turn_leave_together_and_a_close_sends_what_is_held() -> None:
    async def scenario() -> _Transport:
        transport = _Transport()
        corked = _OneWrite(transport, asyncio.get_running_loop())  # type: ignore[arg-type]
        corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert transport.writes == []  # held for the next write
        corked.write(b"body")
        assert transport.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]  # which takes it along at once
        corked.write(b"frame")
        await asyncio.sleep(0)  # a write with none after it in its turn goes at the turn's end
        assert transport.writes[-1] == b"frame"
        corked.write(b"last")
        corked.close()  # nothing held is lost to a close
        assert transport.writes[-1] == b"last" and transport.closed
        assert corked.get_extra_info("peername") == "info:peername"  # the rest is the transport's
        return transport

    assert len(asyncio.run(scenario()).writes) == 3


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    for n in range(3):  # a stream: a frame, then a pause the next frame must not wait behind
        await send({"type": "http.response.body", "body": b"frame %d\n" % n, "more_body": True})
        await asyncio.sleep(0.3)
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture
def port() -> Iterator[int]:
    with serving(_app) as port:
        yield port


def test_a_streamed_answer_leaves_frame_by_frame(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        first = b""
        while b"frame 0" not in first:
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 OK") and b"frame 1" not in first  # not held for the rest
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            rest += sock.recv(65536)
    assert b"frame 1" in rest and b"frame 2" in rest
