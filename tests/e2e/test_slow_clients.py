"""Slow, stalled and oversized clients cannot hold or break the api.

A request body that stops arriving is answered 408 and closed, an oversized body is a 413 on every
route however it is framed, and a bad value the caller sent is not echoed back whole. The stack's api
runs with a short body timeout (``api`` in tests/gateway.test.yaml); socket timeouts here only keep a
broken server from hanging the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
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


def request_head(stack: Stack, path: str, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: gateway", f"Authorization: Bearer {stack.keys['acme']}",
             "Content-Type: application/json", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


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
