"""The one pooled ``httpx.Client`` a worker process shares across all its threads and deployments.

Created lazily on first use, and again after a fork (a client's sockets must not cross processes).
Per-call timeouts come from the deployment. httpx has connect/read/write/pool timeouts but no timeout
for a whole call, so ``post`` enforces ``Timeouts.total`` itself: every socket wait is capped at
``min(read, total)`` and the body is read in chunks, checking the deadline between them. A call thus
ends at the latest one socket wait after its deadline, even against a provider trickling bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from shared.config import Timeouts

# No cap on connections: what bounds them is the calls a process holds (``worker.concurrency``,
# ``api.fast_lane_attempts``). The cap of 512 it had queued the calls past it inside httpx, unseen,
# and held a worker of 2,048 threads to 512 calls (ops/bench_capacity.py).
POOL_LIMITS = httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=30.0)

_lock = threading.Lock()
_client: httpx.Client | None = None
_client_pid: int | None = None


class TotalTimeout(httpx.TimeoutException):
    """The attempt ran past ``Timeouts.total`` while still receiving."""


@dataclass(frozen=True, slots=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    content: bytes


def shared_client() -> httpx.Client:
    """This process's pooled client, made on first use (and again in a forked child)."""
    global _client, _client_pid
    client = _client
    if client is not None and _client_pid == os.getpid():
        return client
    with _lock:
        if _client is None or _client_pid != os.getpid():
            _client = httpx.Client(limits=POOL_LIMITS, timeout=httpx.Timeout(30.0), follow_redirects=False)
            _client_pid = os.getpid()
        return _client


def close_clients() -> None:
    """Close the pooled client (worker shutdown, tests); the next call opens a fresh one."""
    global _client, _client_pid
    with _lock:
        client, _client, _client_pid = _client, None, None
    if client is not None:
        client.close()


def httpx_timeout(timeouts: Timeouts) -> httpx.Timeout:
    wait = min(timeouts.read, timeouts.total)
    return httpx.Timeout(connect=min(timeouts.connect, timeouts.total), read=wait, write=wait, pool=wait)


def post(
    client: httpx.Client, url: str, *, content: bytes, headers: dict[str, str],
    params: dict[str, str] | None, timeouts: Timeouts,
) -> RawResponse:
    """POST and read the whole answer within ``timeouts.total``; httpx errors propagate to the caller."""
    deadline = time.monotonic() + timeouts.total
    request = client.build_request(
        "POST", url, content=content, headers=headers, params=params, timeout=httpx_timeout(timeouts)
    )
    response = client.send(request, stream=True)
    try:
        chunks = []
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise TotalTimeout(f"total timeout of {timeouts.total:g}s exceeded", request=request)
    finally:
        response.close()
    return RawResponse(response.status_code, _lower(response.headers), b"".join(chunks))


def _lower(headers: httpx.Headers) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


@contextlib.contextmanager
def open_stream(
    client: httpx.Client, url: str, *, content: bytes, headers: dict[str, str],
    params: dict[str, str] | None, timeouts: Timeouts,
) -> Iterator[httpx.Response]:
    """POST and hand back the response unread, for a streamed answer; closed when the block ends (which
    aborts a call still streaming). Every socket wait is capped as in ``post``; the caller checks
    ``timeouts.total`` between events."""
    request = client.build_request(
        "POST", url, content=content, headers=headers, params=params, timeout=httpx_timeout(timeouts)
    )
    response = client.send(request, stream=True)
    try:
        yield response
    finally:
        response.close()
