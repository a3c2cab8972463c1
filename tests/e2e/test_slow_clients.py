"""Slow, stalled and oversized clients cannot hold or break the api.

A request head or body that stops arriving is answered 408 and closed, an oversized body is a 413
on every route however it is framed, a huge header block is cut off, and a bad header value is not
echoed back whole. The stack's api runs with short timeouts (``api`` in tests/gateway.test.yaml);
socket timeouts here only keep a broken server from hanging the test.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import httpx
import orjson
import pytest

from shared.config import get_settings
from tests.conftest import Stack

GOOD = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
PATIENCE_S = 10  # longest any read here waits: several times every server timeout in the test config
MIB = 1024 * 1024


@contextmanager
def raw_connection(stack: Stack) -> Iterator[socket.socket]:
    url = httpx.URL(stack.url)
    sock = socket.create_connection((url.host, url.port or 80), timeout=PATIENCE_S)
    try:
        yield sock
    finally:
        sock.close()


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError as exc:
            raise AssertionError(f"the server kept the connection open for {PATIENCE_S} s") from exc
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def parse(raw: bytes) -> tuple[int, dict[str, str], Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, orjson.loads(body) if body else None


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One response with a Content-Length, leaving the connection open."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += sock.recv(65536)
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(parse(head + b"\r\n\r\n")[1]["content-length"])
    while len(body) < length:
        body += sock.recv(65536)
    return int(head.split()[1]), body


def trickle(sock: socket.socket) -> None:
    """Send a byte every 0.1 s until the server answers or closes (for at most ``PATIENCE_S``)."""
    for _ in range(PATIENCE_S * 10):
        if select.select([sock], [], [], 0.1)[0]:
            return
        try:
            sock.send(b"a")
        except OSError:
            return


def request_head(stack: Stack, path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", f"Authorization: Bearer {stack.keys['acme']}",
             "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_request_head_that_stops_arriving_is_answered_408_and_closed(stack: Stack) -> None:
    with raw_connection(stack) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
        status, headers, body = parse(until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    assert body["error"]["code"] == "request_timeout"


def test_a_connection_that_sends_nothing_is_closed(stack: Stack) -> None:
    with raw_connection(stack) as sock:
        assert until_closed(sock) == b""


def test_a_head_trickled_byte_by_byte_is_cut_off_all_the_same(stack: Stack) -> None:
    """Each byte arriving does not extend the deadline: it runs from the request's first byte."""
    with raw_connection(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        trickle(sock)
        assert until_closed(sock).startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_body_that_stops_arriving_is_answered_408_in_the_callers_dialect(
        stack: Stack, path: str, chunked: bool) -> None:
    body = orjson.dumps({**GOOD, "max_tokens": 8})
    half = body[: len(body) // 2]
    with raw_connection(stack) as sock:
        if chunked:
            sock.sendall(request_head(stack, path, "Transfer-Encoding: chunked") + b"%x\r\n%s\r\n" % (len(half), half))
        else:
            sock.sendall(request_head(stack, path, f"Content-Length: {len(body)}") + half)
        status, headers, error = parse(until_closed(sock))
    assert status == 408 and headers["connection"] == "close"
    if path == "/v1/messages":
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
        assert error["error"]["message"] and set(error["error"]) == {"type", "message"}
    else:
        assert error["error"]["type"] == "invalid_request_error" and error["error"]["message"]
        assert error["error"]["param"] is None and error["error"]["code"] == "request_timeout"


def test_fifty_stalled_connections_do_not_stop_the_api(stack: Stack) -> None:
    with ExitStack() as held:
        socks = [held.enter_context(raw_connection(stack)) for _ in range(50)]
        for i, sock in enumerate(socks):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Stalled: %d" % i)
        assert httpx.get(f"{stack.url}/healthz", timeout=PATIENCE_S).status_code == 200
        with stack.client() as c:
            assert c.post("/v1/chat/completions", json={**GOOD, "max_tokens": 8}).status_code == 200
        answers = [until_closed(sock) for sock in socks]
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers)


def oversized_cases() -> list[Any]:
    api = get_settings().api
    cases = []
    for path, limit in [("/v1/chat/completions", api.max_body_bytes), ("/v1/messages", api.max_body_bytes),
                        ("/v1/jobs", api.max_body_bytes), ("/v1/jobs/batch", api.max_batch_body_bytes)]:
        for chunked in (False, True):
            cases.append(pytest.param(path, max(12_000_000, limit + MIB), chunked,
                                      id=f"{path}-{'chunked' if chunked else 'content-length'}"))
    return cases


@pytest.mark.parametrize(("path", "size", "chunked"), oversized_cases())
def test_an_oversized_body_is_a_413_on_every_route(stack: Stack, path: str, size: int, chunked: bool) -> None:
    prefix = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'

    def pieces() -> Iterator[bytes]:  # a generator: httpx sends it with Transfer-Encoding: chunked
        yield prefix
        for _ in range(size // MIB):
            yield b"x" * MIB

    content = pieces() if chunked else b"".join(pieces())
    with stack.client() as c:
        r = c.post(path, content=content)
    assert r.status_code == 413, r.text
    if path == "/v1/messages":
        assert r.json()["error"]["type"] == "request_too_large"
    else:
        assert r.json()["error"]["code"] == "payload_too_large" and "limit" in r.json()["error"]["message"]


def test_the_rest_of_a_refused_body_is_not_read_forever(stack: Stack) -> None:
    """The 413 goes out on the Content-Length alone; the rest of the body, trickled, is not waited for."""
    with raw_connection(stack) as sock:
        sock.sendall(request_head(stack, "/v1/chat/completions", f"Content-Length: {12_000_000}") + b"{")
        status, body = read_response(sock)
        assert status == 413 and b"payload_too_large" in body
        trickle(sock)
        assert until_closed(sock) == b""


def test_a_huge_header_block_is_cut_off(stack: Stack) -> None:
    sent, cut_off = 0, False
    with raw_connection(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Junk: ")
        while sent < 64 * MIB:
            try:
                sock.sendall(b"a" * 65536)
            except OSError:
                cut_off = True
                break
            sent += 65536
        answer = until_closed(sock)
    assert cut_off, "the server read 64 MiB of headers"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431")


@pytest.mark.parametrize(("field", "headers", "body"), [
    ("priority", {"X-Gateway-Priority": "u" * 10_000}, GOOD),
    ("feature", {"X-Gateway-Feature": "f" * 10_000}, GOOD),
    ("model", {}, {**GOOD, "model": "m" * 10_000}),
])
def test_a_long_bad_value_is_not_echoed_back_whole(stack: Stack, field: str, headers: dict[str, str],
                                                   body: dict[str, Any]) -> None:
    with stack.client() as c:
        r = c.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code in (400, 404), r.text
    message = r.json()["error"]["message"]
    assert len(message) < 400 and "10000 characters" in message and field in message


def test_an_idle_keep_alive_connection_outlives_the_head_timeout(stack: Stack) -> None:
    """Idle keep-alive is uvicorn's timeout (``api.keep_alive_s``), not a slow head."""
    api = get_settings().api
    assert api.keep_alive_s > api.header_timeout_s + 1
    with raw_connection(stack) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response(sock)[0] == 200
        time.sleep(api.header_timeout_s + 0.5)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response(sock)[0] == 200
