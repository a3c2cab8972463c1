"""Refuse oversized bodies before they are read into memory (413, not a 500 or a stalled worker).

Bulk submits (``/v1/jobs/batch``) carry thousands of jobs in one body and get a limit of their own.
"""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length up front and counts chunked bodies as they come."""

    BATCH_PATH = "/v1/jobs/batch"

    def __init__(self, app: Any, max_bytes: int, batch_max_bytes: int | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes or max_bytes

    def limit_for(self, path: str) -> int:
        return self.batch_max_bytes if path.startswith(self.BATCH_PATH) else self.max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._reject(scope, send, limit)
            return
        seen = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message  # type: ignore[no-any-return]

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, send, limit)

    async def _reject(self, scope: Scope, send: Any, limit: int) -> None:
        message = f"Request body is larger than the gateway's limit of {limit} bytes."
        if scope["path"].startswith("/v1/messages"):
            body = {"type": "error", "error": {"type": "request_too_large", "message": message}}
        else:
            body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                              "code": "payload_too_large"}}
        payload = orjson.dumps(body)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass
