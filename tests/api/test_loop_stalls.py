"""A client that sent its request in time is served even when the api's own event loop stalled past
the head or body deadline (a busy machine): the deadlines are for slow clients, not for a slow api.

uvloop runs due timers before it reads sockets, so after a stall the deadline fired before the bytes
that had arrived were read: the head deadline closed the connection (the client saw a reset), the
body deadline answered 408. A real uvicorn server with the api's protocol and body guard; the app
blocks its loop on ``/stall``.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from api.limits import BodyGuard
from shared.config import get_settings
from tests.api.servers import PATIENCE_S, serving


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stall":  # what a blocking piece of work does to every connection
        time.sleep(get_settings().api.header_timeout_s + get_settings().api.body_timeout_s + 0.5)
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    api = get_settings().api
    with serving(BodyGuard(_app, max_bytes=1024 * 1024, timeout_s=api.body_timeout_s)) as port:
        yield port


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=PATIENCE_S)


def _answer(sock: socket.socket) -> bytes:
    chunks = []
    while not (b"\r\n\r\n" in b"".join(chunks) and b"".join(chunks).endswith(b"hello")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _stall(port: int) -> socket.socket:
    """Start a request that blocks the server's loop; give the loop time to reach it."""
    stalling = _connect(port)
    stalling.sendall(b"GET /stall HTTP/1.1\r\nhost: x\r\n\r\n")
    time.sleep(0.3)
    return stalling


REQUEST_HEAD = b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n"


def test_a_head_sent_in_time_is_read_after_the_loop_stalled(server: int) -> None:
    client = _connect(server)
    time.sleep(0.3)  # the server has accepted it: its head deadline runs
    stalling = _stall(server)
    client.sendall(REQUEST_HEAD + b"hello")  # in time, while the loop is blocked
    try:
        assert _answer(client).startswith(b"HTTP/1.1 200")
    finally:
        client.close()
        stalling.close()


def test_a_body_sent_in_time_is_read_after_the_loop_stalled(server: int) -> None:
    client = _connect(server)
    client.sendall(REQUEST_HEAD)
    time.sleep(0.3)  # the app waits for the body: its deadline runs
    stalling = _stall(server)
    client.sendall(b"hello")
    try:
        assert _answer(client).startswith(b"HTTP/1.1 200")
    finally:
        client.close()
        stalling.close()


def test_a_client_that_really_stops_still_gets_its_408(server: int) -> None:
    client = _connect(server)
    client.sendall(REQUEST_HEAD + b"he")
    try:
        answer = client.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer
    finally:
        client.close()

