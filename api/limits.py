"""Refuse oversized bodies before they are read into memory (413, not a 500 or a stalled worker)."""

from __future__ import annotations

from typing import Any

import orjson

Scope = dict[str, Any]


class BodySizeLimit:
    """Pure ASGI middleware: checks Content-Length up front and counts chunked bodies as they come."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        seen = 0

        async def counting_receive() -> dict[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message  # type: ignore[no-any-return]

        try:
            await self.app(scope, counting_receive, send)
        except _TooLarge:
            await self._reject(scope, send)

    async def _reject(self, scope: Scope, send: Any) -> None:
        message = f"Request body is larger than the gateway's limit of {self.max_bytes} bytes."
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
