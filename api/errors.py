"""One place that turns errors into HTTP answers, in the caller's dialect.

Callers of ``/v1/messages`` (the Anthropic SDK) get Anthropic's error body; everyone else gets
OpenAI's. Validation errors name the field and say what to change. Nothing a caller sends may
produce a 500: unexpected exceptions are logged with a reference and answered as 500 api_error.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import OrjsonResponse
from shared.errors import GatewayError, clip

log = logging.getLogger("gateway.api")

_ANTHROPIC_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 408: "invalid_request_error", 413: "request_too_large", 429: "rate_limit_error",
    502: "api_error", 503: "overloaded_error", 504: "api_error",
}


def error_body(path: str, status: int, message: str, *, type_: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    """The error JSON in the dialect of the route at ``path``; the ASGI-level guards use it too."""
    if path.startswith("/v1/messages"):
        return {"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}}
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(request: Request, status: int, message: str, *, type_: str, code: str | None = None,
                   param: str | None = None, headers: dict[str, str] | None = None) -> OrjsonResponse:
    body = error_body(request.url.path, status, message, type_=type_, code=code, param=param)
    return OrjsonResponse(body, status_code=status, headers=headers)


def _where(err: dict[str, Any]) -> str:
    """The field an error is about, as ``messages.0.content``; a value the gateway cannot store is
    reported by its model with the path inside it (``shared.schemas._storable``)."""
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    inner = (err.get("ctx") or {}).get("path") if err.get("type") == "unsupported_value" else None
    return clip(".".join([*loc, *([inner] if inner else [])]))


def _describe(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    parts = []
    for err in errors[:5]:
        if err.get("type") == "json_invalid":
            return "The request body is not valid JSON: " + err.get("ctx", {}).get("error", "parse error"), None
        parts.append(f"{_where(err) or 'body'}: {err.get('msg')}")
    param = _where(errors[0]) or None if errors else None
    return "Invalid request: " + "; ".join(parts), param


async def _on_gateway_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, GatewayError)
    if exc.status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.message)
    return error_response(request, exc.status, exc.message, type_=exc.type, code=exc.code,
                          param=exc.param, headers=exc.headers or None)


async def _on_validation_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    message, param = _describe(errors)
    # A value no store can hold gets a code of its own: a client can tell it from a plain typo.
    code = "unsupported_value" if any(e.get("type") == "unsupported_value" for e in errors) else None
    return error_response(request, 400, message, type_="invalid_request_error", param=param, code=code)


async def _on_http_error(request: Request, exc: Exception) -> OrjsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = "invalid_request_error" if exc.status_code < 500 else "api_error"
    return error_response(request, exc.status_code, str(exc.detail), type_=type_,
                          headers=getattr(exc, "headers", None))


async def _on_redis_down(request: Request, exc: Exception) -> OrjsonResponse:
    log.warning("Redis unavailable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(request, 503, "The gateway's queue and budget store (Redis) is unavailable; nothing "
                          "was accepted. Retry shortly.", type_="api_error", code="queue_unavailable",
                          headers={"retry-after": "2"})


async def _on_unexpected(request: Request, exc: Exception) -> OrjsonResponse:
    ref = uuid.uuid4().hex[:12]
    log.exception("unexpected error (ref %s) on %s %s", ref, request.method, request.url.path)
    return error_response(request, 500, f"Internal error (reference {ref}); the gateway's logs have details.",
                          type_="api_error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(GatewayError, _on_gateway_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(redis.RedisError, _on_redis_down)
    app.add_exception_handler(Exception, _on_unexpected)
