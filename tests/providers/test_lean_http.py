"""The lean client (``execution.providers.lean_http``) against a real socket server whose
every reply the test writes: connections reused, a connection the server closed while idle replaced,
chunked and compressed bodies read whole, the total timeout kept against a trickle, each failure
mapped as the httpx path maps it (``errors.from_transport``); event streams parsed across any split of
their reads, a stream left early aborted, one cut mid-way a connection error."""

from __future__ import annotations

import gzip
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from execution.providers import OpenAIAdapter, ProviderCallError, lean_http
from shared.config import Timeouts
from tests.providers.conftest import CHAT, make_deployment, make_provider

ANSWER = (b'{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":'
          b'{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,'
          b'"completion_tokens":1,"total_tokens":4}}')
Reply = Callable[[socket.socket, int], bool]  # writes the reply to the n-th request; False: close after it


def plain(sock: socket.socket, _: int, extra: bytes = b"", body: bytes = ANSWER) -> bool:
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s"
                 % (len(body), extra, body))
    return True


class Server:
    """Answers each request on a connection with ``reply``; counts connections and requests."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        with sock:
            buffered = b""
            while True:
                while b"\r\n\r\n" not in buffered:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buffered += data
                head, buffered = buffered.split(b"\r\n\r\n", 1)
                self.heads.append(head)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(buffered) < length:
                    buffered += sock.recv(65536)
                buffered = buffered[length:]
                self.requests += 1
                if not self.reply(sock, self.requests):
                    return


@pytest.fixture
def serve() -> Iterator[Callable[[Reply], tuple[Server, OpenAIAdapter]]]:
    servers: list[Server] = []

    def start(reply: Reply, timeouts: Timeouts | None = None) -> tuple[Server, OpenAIAdapter]:
        server = Server(reply)
        servers.append(server)
        deployment = make_deployment("gpt-4o-mini", timeouts=timeouts or Timeouts(connect=2, read=5, total=10))
        return server, OpenAIAdapter(deployment, make_provider("openai", server.url))
    yield start
    for server in servers:
        server.listener.close()


def test_calls_reuse_one_connection(serve: Any) -> None:
    server, adapter = serve(plain)
    answers = [adapter.call(CHAT) for _ in range(5)]
    assert [a.body["choices"][0]["message"]["content"] for a in answers] == ["hi"] * 5
    assert (server.requests, server.connections) == (5, 1)


def test_the_request_carries_the_deployment_s_query_and_headers(serve: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZ_KEY", "az-secret")
    server, _ = serve(plain)
    adapter = OpenAIAdapter(make_deployment("gpt-4o-mini"), make_provider(
        "openai", f"{server.url}/openai/deployments/d", api_key_env="AZ_KEY", api_version="2025-01-01-preview",
        headers={"OpenAI-Organization": "org-1"}))
    assert adapter.params  # the api-version goes in the query
    assert adapter.call(CHAT).status == 200
    request_line, *lines = server.heads[0].decode().split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    assert request_line == f"POST /v1/openai/deployments/d/chat/completions?{urlencode(adapter.params)} HTTP/1.1"
    assert "az-secret" in (headers.get("api-key") or headers.get("authorization", ""))
    assert headers["openai-organization"] == "org-1" and headers["content-type"] == "application/json"


def test_a_connection_the_server_closed_while_idle_is_replaced(serve: Any) -> None:
    server, adapter = serve(lambda sock, n: plain(sock, n) and False)  # answers, then closes the connection
    for _ in range(3):
        time.sleep(0.05)  # the close reaches the client's idle socket
        assert adapter.call(CHAT).status == 200
    assert (server.requests, server.connections) == (3, 3)


def test_connection_close_is_honoured(serve: Any) -> None:
    server, adapter = serve(lambda sock, n: plain(sock, n, b"connection: close\r\n") and False)
    assert [adapter.call(CHAT).status for _ in range(2)] == [200, 200]
    assert server.connections == 2


def test_chunked_and_gzipped_bodies_are_read_whole(serve: Any) -> None:
    def chunked_gzip(sock: socket.socket, _: int) -> bool:
        body = gzip.compress(ANSWER)
        pieces = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n"
                     b"content-encoding: gzip\r\nx-ratelimit-remaining-requests: 9\r\nVia: a\r\nvia: b\r\n\r\n"
                     + pieces + b"0\r\n\r\n")
        return True
    server, adapter = serve(chunked_gzip)
    first, second = adapter.call(CHAT), adapter.call(CHAT)
    assert first.body["choices"][0]["message"]["content"] == "hi" and second.status == 200
    assert first.headers["via"] == "a, b" and first.headers["x-ratelimit-remaining-requests"] == "9"
    assert server.connections == 1


def test_a_trickling_answer_ends_at_the_total_timeout(serve: Any) -> None:
    def trickle(sock: socket.socket, _: int) -> bool:
        try:
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
            for _ in range(100):
                time.sleep(0.02)
                sock.sendall(b" ")
        except OSError:  # the client gave up, as it should
            pass
        return False
    _, adapter = serve(trickle, Timeouts(connect=1, read=5, total=0.3))
    with pytest.raises(ProviderCallError) as caught:
        adapter.call(CHAT)
    assert caught.value.kind == "timeout" and caught.value.retryable


def test_a_silent_server_is_a_read_timeout_and_a_dropped_one_a_connection_error(serve: Any) -> None:
    _, silent = serve(lambda sock, n: time.sleep(3) or False, Timeouts(connect=1, read=0.2, total=5))
    with pytest.raises(ProviderCallError) as caught:
        silent.call(CHAT)
    assert caught.value.kind == "timeout"
    _, dropped = serve(lambda sock, n: False)  # reads the request, closes without a word
    with pytest.raises(ProviderCallError) as caught:
        dropped.call(CHAT)
    assert caught.value.kind == "connection" and caught.value.retryable


def test_a_proxied_environment_leaves_every_call_to_httpx(monkeypatch: pytest.MonkeyPatch) -> None:
    lean_http._proxied.cache_clear()
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    try:
        assert not lean_http.usable()
    finally:
        monkeypatch.delenv("HTTPS_PROXY")
        lean_http._proxied.cache_clear()
    assert lean_http.usable()
    assert lean_http.target_of("ftp://example.test/x") is None
    assert lean_http.target_of("https://user:pw@example.test/v1") is None
    target = lean_http.target_of("https://api.example.test/v1/chat?x=1")
    assert target == lean_http.Target(lean_http.Origin("https", "api.example.test", 443), "/v1/chat?x=1")


# --------------------------------------------------------------------------- streamed answers


def _chunked(sock: socket.socket, pieces: list[bytes], end: bool = True) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
    for piece in pieces:
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        time.sleep(0.002)  # each piece its own read
    if end:
        sock.sendall(b"0\r\n\r\n")


SSE_BODY = (b": a comment\r\n\r\nevent: message_start\r\ndata: {\"type\":\"message_start\"}\r\n\r\n"
            b"data: {\"choices\":[{\"delta\":{\"content\":\"li\"}}]}\n\ndata: [DONE]\n\n")


def _open(adapter: OpenAIAdapter) -> Any:
    from execution.providers.streaming import open_stream
    return open_stream(adapter, CHAT)


def test_a_stream_is_parsed_across_awkward_reads_and_its_connection_reused(serve: Any) -> None:
    cut = [SSE_BODY[i:i + 5] for i in range(0, len(SSE_BODY), 5)]  # CRLFs and lines split between reads
    server, adapter = serve(lambda sock, n: _chunked(sock, cut) or True)
    for _ in range(2):
        with _open(adapter) as call:
            events = list(call.events())
        assert [e.name for e in events] == ["message_start", None, None]
        assert events[0].data == {"type": "message_start"} and events[-1].data is None  # [DONE]
    assert (server.requests, server.connections) == (2, 1)


def test_leaving_a_stream_early_aborts_the_call(serve: Any) -> None:
    aborted = threading.Event()

    def endless(sock: socket.socket, _: int) -> bool:
        try:
            _chunked(sock, [b"data: {\"choices\":[]}\n\n"] * 500, end=False)
        except OSError:
            aborted.set()  # the client closed the connection: the provider stops generating
        return False
    server, adapter = serve(endless)
    with _open(adapter) as call:
        next(iter(call.events()))
    assert aborted.wait(5)
    assert server.connections == 1


def test_a_stream_cut_mid_way_is_a_connection_error(serve: Any) -> None:
    def cut(sock: socket.socket, _: int) -> bool:
        _chunked(sock, [b"data: {\"choices\":[]}\n\n"] * 3, end=False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST
        return False
    _, adapter = serve(cut)
    with pytest.raises(ProviderCallError) as caught, _open(adapter) as call:
        list(call.events())
    assert caught.value.kind == "connection" and caught.value.retryable


def test_a_connection_past_descriptor_1024_is_reused_too(serve: Any) -> None:
    """A worker holding thousands of calls has descriptors past select()'s limit: reuse must not depend on it."""
    import os
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the open-file limit ({hard}) is below 1,200")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the next socket's descriptor is past 1,024
    try:
        server, adapter = serve(plain)
        assert [adapter.call(CHAT).status for _ in range(3)] == [200, 200, 200]
        assert server.connections == 1
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class _Writes:
    """A socket stand-in that keeps what each ``sendall`` wrote."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.writes.append(bytes(data))


@pytest.mark.parametrize("size, writes", [(200, 1), (lean_http.ONE_WRITE_MAX + 1, 2)])
def test_a_request_s_head_and_body_go_out_in_one_write_unless_the_body_is_large(size: int, writes: int) -> None:
    conn = lean_http._OneWrite("127.0.0.1", 9)
    conn.sock = sock = _Writes()  # type: ignore[assignment]
    body = b"x" * size
    conn.request("POST", "/v1/chat/completions", body=body, headers={"content-type": "application/json"})
    assert len(sock.writes) == writes  # one packet, one wake-up of the provider; a large body is not copied
    sent = b"".join(sock.writes)
    head, _, rest = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n") and b"Content-Length: %d" % size in head
    assert rest == body
