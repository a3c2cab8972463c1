"""Guard every request body at the ASGI level: too large is a 413, stalled is a 408.

Refused before the body is read into memory, and answered here, at once, in the caller's dialect,
whatever the route does next: a route with a pydantic body turns any exception raised while it reads
into a 400 ("error parsing the body"), so the guard sends the answer itself, then tells the app the
client went away and drops whatever the app still sends. Bulk submits (``/v1/jobs/batch``) carry
thousands of jobs in one body and get a limit of their own, and so do file uploads (``/v1/files``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect

from api.errors import error_body

Scope = dict[str, Any]
Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]
Receive = Callable[[], Awaitable[Message]]
_DISCONNECT: Message = {"type": "http.disconnect"}
# After the api's own event loop stalled (a busy machine), a deadline's timer and the bytes the client
# sent in time are handled in the same loop iteration, and the timer's cancellation wins. So a
# deadline that fires looks once more, this long, before it refuses (api/server.py's head deadline too).
STALL_GRACE_S = 0.05


class BodyGuard:
    """Pure ASGI middleware: checks Content-Length up front, counts chunked bodies as they come, and
    gives up on a body when none of it arrives for ``timeout_s``."""

    BATCH_PATH = "/v1/jobs/batch"
    FILES_PATH = "/v1/files"  # uploads of batch input files: their own limit (``files.max_bytes``)
    MESSAGE_BATCHES_PATH = "/v1/messages/batches"  # a Message Batch's requests: the bulk limit, as a batch of jobs

    def __init__(self, app: Any, max_bytes: int, batch_max_bytes: int | None = None,
                 timeout_s: float | None = None, files_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes or max_bytes
        self.files_max_bytes = files_max_bytes or max_bytes
        self.timeout_s = timeout_s

    def limit_for(self, path: str) -> int:
        if path.startswith(self.BATCH_PATH) or path == self.MESSAGE_BATCHES_PATH:
            return self.batch_max_bytes
        return self.files_max_bytes if path == self.FILES_PATH else self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await answer(scope["path"], send, 413, _too_large(limit), "payload_too_large")
            return
        body = _GuardedBody(scope["path"], receive, send, limit, self.timeout_s)
        try:
            await self.app(scope, body.receive, body.send)
        except ClientDisconnect:  # a route that reads the body itself, told the client went away
            if not body.answered:
                raise


class _GuardedBody:
    """One request's ``receive`` and ``send`` as the app sees them."""

    __slots__ = ("path", "_receive", "_send", "limit", "timeout_s", "seen", "complete", "started", "answered")

    def __init__(self, path: str, receive: Receive, send: Send, limit: int, timeout_s: float | None) -> None:
        self.path, self._receive, self._send = path, receive, send
        self.limit, self.timeout_s = limit, timeout_s
        self.seen = 0
        self.complete = False  # the whole body is in
        self.started = False  # the app has begun its answer
        self.answered = False  # the guard has sent its own answer instead

    async def receive(self) -> Message:
        if self.answered:
            return _DISCONNECT
        if self.complete:  # e.g. a streaming answer listening for the client to go: no deadline
            return await self._receive()
        try:
            async with asyncio.timeout(self.timeout_s):
                message = await self._receive()
        except TimeoutError:
            try:  # what came in time but was not read yet (see ``STALL_GRACE_S``)
                async with asyncio.timeout(STALL_GRACE_S):
                    message = await self._receive()
            except TimeoutError:
                message = None
        if message is None:
            return await self._refuse(408, f"The request body stopped arriving: nothing came for {self.timeout_s:g} s. "
                                           "Send the whole body without pausing.", "request_timeout", close=True)
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
            if self.seen > self.limit:
                return await self._refuse(413, _too_large(self.limit), "payload_too_large")
        return message

    async def send(self, message: Message) -> None:
        if self.answered:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _refuse(self, status: int, text: str, code: str, *, close: bool = False) -> Message:
        if not self.started:  # otherwise the app answered without the body: its answer stands
            self.answered = True
            await answer(self.path, self._send, status, text, code, close=close)
        return _DISCONNECT


def _too_large(limit: int) -> str:
    return f"Request body is larger than the gateway's limit of {limit} bytes."


async def answer(path: str, send: Send, status: int, message: str, code: str, *, close: bool = False) -> None:
    """A whole JSON error answer sent from ASGI code; ``close`` ends the connection after it."""
    payload = orjson.dumps(error_body(path, status, message, type_="invalid_request_error", code=code))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
