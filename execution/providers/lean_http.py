"""Provider calls over a lean HTTP/1.1 connection pool.

A provider call is one POST and one JSON answer, or an event stream. Through ``httpx`` a whole answer
cost ~1.4 ms of CPU on this machine (request and response models, header objects, the transport's
layers) and a 60-event stream ~4 ms (h11's state machine and three decoding layers per read); the
standard library's ``http.client`` does the same for ~0.5 and ~1.5 ms. So provider calls go through
this pool (``post``, ``open_stream``), and ``httpx`` keeps what it is needed for: adapters given a
client of their own (tests), and any process whose environment sets a proxy (``httpx`` honours
``HTTP(S)_PROXY``; this pool does not).

The guarantees are ``execution.providers.http``'s: every socket wait capped at ``min(read, total)``,
the body read in pieces with ``Timeouts.total`` checked between them, a stream closed before its end
aborting the call (its connection is dropped, never reused), and failures raised as ``httpx``'s
exceptions, so ``errors.from_transport`` maps both paths the same way. An idle connection
is reused only while the server keeps it open (a socket readable while idle has been closed, as
httpcore checks), and a connection is never shared by two threads.
"""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn
from urllib.parse import urlencode, urlsplit

import certifi
import httpx
from httpx_sse import ServerSentEvent

from execution.providers.http import RawResponse, TotalTimeout
from shared.config import Timeouts

IDLE_S = 30.0  # an idle connection older than this is closed rather than reused (httpx's keepalive_expiry)
MAX_IDLE = 256  # idle connections kept per host at most
READ_PIECE = 65536
ONE_WRITE_MAX = 1 << 20  # a request body up to this is sent in the same write as its head
USER_AGENT = "ai-gateway"


class Origin(NamedTuple):
    scheme: str
    host: str
    port: int


class Target(NamedTuple):
    origin: Origin
    path: str  # with its query


@lru_cache(maxsize=1024)
def target_of(url: str) -> Target | None:
    """Where ``url`` points, or None when this pool does not take it (not plain http(s))."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(Origin(parts.scheme, parts.hostname, port), path)


def usable() -> bool:
    """False when the environment sets a proxy (``httpx`` then sends every call, through it)."""
    return not _proxied()


@lru_cache(maxsize=1)
def _proxied() -> bool:
    return bool(urllib.request.getproxies())


@lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("SSL_CERT_FILE") or certifi.where())


class _OneWrite(http.client.HTTPConnection):
    """http.client sends a request's head and its body in two writes: with TCP_NODELAY two packets, and
    two wake-ups of the server before it can answer. A body up to ``ONE_WRITE_MAX`` goes out with its
    head here, in one write (a larger one is not copied for it)."""

    def _send_output(self, message_body: Any = None, encode_chunked: bool = False) -> None:
        if not isinstance(message_body, bytes) or encode_chunked or len(message_body) > ONE_WRITE_MAX:
            super()._send_output(message_body, encode_chunked)  # type: ignore[misc]  # private in typeshed
            return
        buffer: list[bytes] = self._buffer  # type: ignore[attr-defined]  # the head, as putheader left it
        buffer.extend((b"", b""))
        head = b"\r\n".join(buffer)
        del buffer[:]
        self.send(head + message_body)


class _OneWriteTLS(_OneWrite, http.client.HTTPSConnection):
    pass


class _Idle(NamedTuple):
    conn: http.client.HTTPConnection
    since: float


class Pool:
    """Idle connections per origin, taken by one call at a time (last in, first out: the warmest)."""

    def __init__(self) -> None:
        self._idle: dict[Origin, list[_Idle]] = {}
        self._lock = threading.Lock()

    def take(self, origin: Origin, connect_s: float) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to ``origin``, and whether it was reused (a new one is not connected yet)."""
        now = time.monotonic()
        while True:
            with self._lock:
                idle = self._idle.get(origin)
                found = idle.pop() if idle else None
            if found is None:
                break
            if now - found.since < IDLE_S and _still_open(found.conn):
                return found.conn, True
            found.conn.close()
        if origin.scheme == "https":
            return _OneWriteTLS(origin.host, origin.port, timeout=connect_s, context=_tls()), False
        return _OneWrite(origin.host, origin.port, timeout=connect_s), False

    def give_back(self, origin: Origin, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < MAX_IDLE:
                idle.append(_Idle(conn, time.monotonic()))
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for found in conns:
                found.conn.close()


def _still_open(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive socket has nothing to read; a readable one was closed by the server (or sent
    something unasked): either way it cannot carry a request."""
    sock = conn.sock
    if sock is None:
        return False
    try:  # poll, not select: a process holding thousands of calls has descriptors past select's 1,024
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


_pools: dict[int, Pool] = {}
_pools_lock = threading.Lock()


def pool() -> Pool:
    """This process's pool (a forked child makes its own: sockets must not cross processes)."""
    found = _pools.get(os.getpid())
    if found is None:
        with _pools_lock:
            found = _pools.setdefault(os.getpid(), Pool())
    return found


def close_pool() -> None:
    with _pools_lock:
        found = _pools.pop(os.getpid(), None)
    if found is not None:
        found.close()


def post(target: Target, *, content: bytes, headers: dict[str, str], params: dict[str, str] | None,
         timeouts: Timeouts) -> RawResponse:
    """POST ``content`` and read the whole answer within ``timeouts.total`` (see the module docstring)."""
    deadline = time.monotonic() + timeouts.total
    conn, response = _request(target, content, headers, params, timeouts)
    try:
        body = _read(response, deadline)
    except Exception as exc:
        _fail(conn, exc)
    _done_with(target, conn, response)
    found = _headers(response)
    return RawResponse(response.status, found, _decoded(body, found.get("content-encoding")))


class Stream:
    """A streamed answer as it arrives: its status and headers, then its events (``events``) or, for an
    error status, its whole body (``read``)."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, deadline: float) -> None:
        self.conn = conn
        self.response = response
        self.deadline = deadline
        self.status_code = response.status
        self.headers = _headers(response)
        self.ended = False  # read to its end: the connection may carry another call

    def read(self) -> bytes:
        try:
            body = _read(self.response, self.deadline)
        except Exception as exc:
            _fail(self.conn, exc)
        self.ended = True
        return _decoded(body, self.headers.get("content-encoding"))

    def events(self) -> Iterator[ServerSentEvent]:
        """The server-sent events, parsed as the spec says (``event``, ``data`` lines joined, ``id``;
        comments skipped), one socket read at a time."""
        undo = _decompressor(self.headers.get("content-encoding"))
        event, last_id, rest = "", "", b""
        data: list[str] = []
        while True:
            try:
                piece = self.response.read1(READ_PIECE)
            except Exception as exc:
                _fail(self.conn, exc)
            if not piece:
                break
            rest += undo.decompress(piece) if undo is not None else piece
            held = b"\r" if rest.endswith(b"\r") else b""  # maybe the first half of a CRLF
            *lines, rest = rest[:len(rest) - len(held)].replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
            rest += held
            for raw in lines:
                if not raw:
                    if data:
                        yield ServerSentEvent(event=event or "message", data="\n".join(data), id=last_id)
                    event, data = "", []
                    continue
                name, _, value = raw.decode("utf-8", "replace").partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id" and "\0" not in value:
                    last_id = value
        self.ended = True
        if data:  # a last event without its blank line
            yield ServerSentEvent(event=event or "message", data="\n".join(data), id=last_id)


@contextmanager
def open_stream(target: Target, *, content: bytes, headers: dict[str, str], params: dict[str, str] | None,
                timeouts: Timeouts) -> Iterator[Stream]:
    """POST and hand back the answer unread; closed when the block ends, which aborts a call still
    streaming (its connection is dropped). Every socket wait is capped as in ``post``; the caller checks
    ``timeouts.total`` between events."""
    deadline = time.monotonic() + timeouts.total
    conn, response = _request(target, content, headers, params, timeouts)
    stream = Stream(conn, response, deadline)
    try:
        yield stream
    finally:
        if stream.ended:
            _done_with(target, conn, response)
        else:
            conn.close()


def _request(target: Target, content: bytes, headers: dict[str, str], params: dict[str, str] | None,
             timeouts: Timeouts) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """Send the POST, on an idle connection when there is one, and read the answer's head."""
    wait, connect_s = min(timeouts.read, timeouts.total), min(timeouts.connect, timeouts.total)
    path = target.path if not params else target.path + ("&" if "?" in target.path else "?") + urlencode(params)
    sent = {"user-agent": USER_AGENT, **headers}
    conn, reused = pool().take(target.origin, connect_s)
    try:
        try:
            _send(conn, path, content, sent, wait)
        except ConnectionError:
            if not reused:
                raise
            # The server closed the idle connection as the request went out, unread: once more on a new
            # one. (Never once the request is out: the provider may be answering, and charging, it.)
            conn.close()
            conn, reused = pool().take(target.origin, connect_s)
            _send(conn, path, content, sent, wait)
        return conn, conn.getresponse()
    except Exception as exc:
        _fail(conn, exc)


def _fail(conn: http.client.HTTPConnection, exc: Exception) -> NoReturn:
    """Drop the connection and raise ``exc`` as httpx's exception (``_as_httpx``)."""
    mapped = _as_httpx(exc, connected=conn.sock is not None)
    conn.close()
    if mapped is exc:
        raise exc
    raise mapped from exc


def _done_with(target: Target, conn: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
    """An answer read to its end: its connection back to the pool, unless the server closes it."""
    if response.will_close:
        conn.close()
    else:
        pool().give_back(target.origin, conn)


def _send(conn: http.client.HTTPConnection, path: str, content: bytes, headers: dict[str, str],
          wait: float) -> None:
    if conn.sock is None:
        conn.connect()  # under the connect timeout the connection was made with (and with TCP_NODELAY)
    conn.sock.settimeout(wait)
    conn.request("POST", path, body=content, headers=headers)


def _read(response: http.client.HTTPResponse, deadline: float) -> bytes:
    """The body, a socket read at a time (each capped by the socket's timeout), the deadline checked between."""
    pieces = []
    while piece := response.read1(READ_PIECE):
        pieces.append(piece)
        if time.monotonic() > deadline:
            raise TotalTimeout("total timeout exceeded while receiving")
    response.close()  # read to its end: the connection may carry the next request
    return b"".join(pieces)


def _headers(response: http.client.HTTPResponse) -> dict[str, str]:
    """Lower-cased names; a header sent more than once is its values joined with ", " (as httpx does)."""
    found: dict[str, str] = {}
    for name, value in response.getheaders():
        key = name.lower()
        found[key] = f"{found[key]}, {value}" if key in found else value
    return found


def _decompressor(encoding: str | None) -> zlib._Decompress | None:
    """No Accept-Encoding is sent, so a stream comes as it is; one compressed anyway is undone as it comes."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj()
    return None


def _decoded(body: bytes, encoding: str | None) -> bytes:
    """No Accept-Encoding is sent, so a body comes as it is; one compressed anyway is undone here."""
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompress(body, 16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


def _as_httpx(exc: BaseException, *, connected: bool) -> BaseException:
    """The failure as the httpx exception ``errors.from_transport`` maps (anything else unchanged)."""
    if isinstance(exc, httpx.HTTPError):
        return exc
    if isinstance(exc, TimeoutError):  # socket.timeout
        return httpx.ReadTimeout(str(exc)) if connected else httpx.ConnectTimeout(str(exc))
    if isinstance(exc, ssl.SSLError | ConnectionRefusedError | socket.gaierror):
        return httpx.ConnectError(f"{type(exc).__name__}: {exc}")
    if isinstance(exc, http.client.HTTPException | OSError | zlib.error):
        return httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}") if connected else \
            httpx.ConnectError(f"{type(exc).__name__}: {exc}")
    return exc
