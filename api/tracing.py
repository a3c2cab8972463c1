"""The caller's trace context: a well-formed W3C ``traceparent`` header becomes the parent of the job's
spans and is forwarded to the provider (``shared.tracing``); a malformed one is ignored, as the W3C
spec says. One scan of the request's headers, tracing on or off."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from shared import tracing


class TraceContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = next((value for name, value in scope["headers"] if name == b"traceparent"), None)
        token = tracing.incoming.set(tracing.valid_traceparent(raw.decode("latin-1")) if raw else None)
        try:
            await self.app(scope, receive, send)
        finally:
            tracing.incoming.reset(token)
