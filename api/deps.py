"""Dependencies routes declare with ``Annotated`` aliases, so no route builds its own clients.

Every key is checked by a dependency (``api.auth``), and routes that take a body read it after that
(``read_body``), so an unauthenticated request never costs a body read or a JSON parse.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyCookie, APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from api import console_session
from api.auth import Caller
from api.gateway import Gateway
from api.streaming import StreamHub
from api.waiter import CompletionWaiter
from shared.errors import AuthError, PermissionDenied

M = TypeVar("M", bound=BaseModel)

# Both SDKs' ways of sending a key, declared as security schemes so the OpenAPI document says which
# routes take which key: a tenant's, or the operators' (the same two headers, schemes of their own).
_bearer = HTTPBearer(auto_error=False, scheme_name="ApiKey",
                     description="A tenant's API key as `Authorization: Bearer <key>` (the OpenAI SDK)")
_x_api_key = APIKeyHeader(name="x-api-key", auto_error=False, scheme_name="XApiKey",
                          description="A tenant's API key as `x-api-key: <key>` (the Anthropic SDK)")
_operators_bearer = HTTPBearer(auto_error=False, scheme_name="OperatorsKey",
                               description="The operators' key (`GATEWAY_ADMIN_KEY`) as `Authorization: Bearer`")
_operators_x_api_key = APIKeyHeader(name="x-api-key", auto_error=False, scheme_name="OperatorsXApiKey",
                                    description="The operators' key (`GATEWAY_ADMIN_KEY`) as `x-api-key`")
# The console in a browser: its session cookie, and the CSRF token that must come with it.
_console_session = APIKeyCookie(name=console_session.SESSION_COOKIE, auto_error=False, scheme_name="ConsoleSession",
                                description="The console's session (`POST /console/login`); needs `ConsoleCsrf` too")
_console_csrf = APIKeyHeader(name=console_session.CSRF_HEADER, auto_error=False, scheme_name="ConsoleCsrf",
                             description="The CSRF token the console page was given with its session")


async def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway


async def _waiter(request: Request) -> CompletionWaiter:
    return request.app.state.waiter


async def _streams(request: Request) -> StreamHub:
    return request.app.state.streams


def _key_of(bearer: HTTPAuthorizationCredentials | None, x_api_key: str | None) -> str | None:
    """The caller's key: ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key`` (Anthropic SDK)."""
    if bearer is not None and bearer.credentials.strip():
        return bearer.credentials.strip()
    if x_api_key and x_api_key.strip():
        return x_api_key.strip()
    return None


async def _maybe_api_key(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                         x_api_key: Annotated[str | None, Depends(_x_api_key)]) -> str | None:
    return _key_of(bearer, x_api_key)


async def _maybe_operators_key(bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_operators_bearer)],
                               x_api_key: Annotated[str | None, Depends(_operators_x_api_key)]) -> str | None:
    return _key_of(bearer, x_api_key)


def _required(request: Request, api_key: str | None) -> str:
    if api_key:
        return api_key
    request.app.state.gateway.auth.on_failure("missing_api_key")
    raise AuthError("Missing API key. Send 'Authorization: Bearer <key>' (or 'x-api-key: <key>'); "
                    "create one with 'gateway keys create --tenant <tenant>'.", code="missing_api_key")


async def _api_key(request: Request, api_key: Annotated[str | None, Depends(_maybe_api_key)]) -> str:
    return _required(request, api_key)


def _source(request: Request) -> str:
    return request.client.host if request.client else ""


async def _caller(request: Request, api_key: Annotated[str, Depends(_api_key)]) -> Caller:
    """A tenant's key, confirmed against the current auth epoch."""
    gw: Gateway = request.app.state.gateway
    caller = await run_in_threadpool(gw.auth.check, api_key, _source(request))
    if caller.admin:
        raise PermissionDenied("This route needs a tenant's API key, not the operators' key.")
    return caller


async def _submitter(request: Request, api_key: Annotated[str, Depends(_api_key)]) -> Caller:
    """A tenant's key for a submit: a key in the cache costs nothing here, since the submit confirms it
    against the epoch in the round trip it makes anyway (``Gateway._read_ahead``)."""
    gw: Gateway = request.app.state.gateway
    return gw.auth.cached(api_key) or await _caller(request, api_key)


async def submitter(request: Request) -> Caller:
    """``SubmitterDep`` without FastAPI's dependency solving, for the routes on the fast lane's path
    (``api.routes.common.submit_of``): the same two headers, read straight from the request."""
    return await _submitter(request, _required(request, key_in_headers(request.headers)))


def key_in_headers(headers: Headers) -> str | None:
    """What ``_bearer`` and ``_x_api_key`` find, then ``_key_of``: a bearer credential, else ``x-api-key``."""
    scheme, _, credentials = (headers.get("authorization") or "").partition(" ")
    bearer = credentials.strip() if scheme.lower() == "bearer" else ""
    return bearer or (headers.get("x-api-key") or "").strip() or None


def _operator(request: Request, api_key: str | None) -> Caller:
    key = _required(request, api_key)
    gw: Gateway = request.app.state.gateway
    if gw.auth.admin_key() is None:
        raise PermissionDenied(f"Admin routes are off: set {gw.settings.api.admin_key_env} in the api's "
                               "environment.", code="admin_disabled")
    if not gw.auth.is_admin(key):
        raise AuthError("This route needs the operators' key, not a tenant key.")
    return Caller(key, admin=True)


async def _admin(request: Request, api_key: Annotated[str | None, Depends(_maybe_operators_key)],
                 session: Annotated[str | None, Depends(_console_session)],
                 csrf: Annotated[str | None, Depends(_console_csrf)]) -> Caller:
    """The operators' key, or the console's session cookie with its CSRF token (``api.console_session``)."""
    if api_key is None and session is not None:
        return _console_operator(request, session, csrf)
    return _operator(request, api_key)


def _console_operator(request: Request, session: str, csrf: str | None) -> Caller:
    gw: Gateway = request.app.state.gateway
    key = gw.auth.admin_key()
    if key is None or not console_session.session_valid(key, session):
        gw.auth.on_failure("invalid_console_session")
        raise AuthError("The console session has expired or was ended; log in again at /console.",
                        code="invalid_console_session")
    if not console_session.csrf_valid(key, session, csrf):
        raise PermissionDenied(f"A request with the console's session cookie must carry its CSRF token in "
                               f"{console_session.CSRF_HEADER}.", code="csrf_token_missing")
    return Caller(key, admin=True)
async def _usage_reader(request: Request, tenant_key: Annotated[str | None, Depends(_maybe_api_key)],
                        operators_key: Annotated[str | None, Depends(_maybe_operators_key)]) -> Caller:
    """A tenant's key (its own usage) or the operators' key (everyone's): both schemes are declared, so the
    document says either works; they read the same headers."""
    key = _required(request, tenant_key or operators_key)
    gw: Gateway = request.app.state.gateway
    return await run_in_threadpool(gw.auth.check, key, _source(request))


async def _metrics_reader(request: Request, api_key: Annotated[str | None, Depends(_maybe_operators_key)]) -> None:
    """/metrics names every tenant and its spend: the operators' key, unless ``api.metrics_public``."""
    gw: Gateway = request.app.state.gateway
    if not gw.settings.api.metrics_public:
        _operator(request, api_key)


async def read_body(request: Request, model: type[M], context: dict[str, Any] | None = None) -> M:
    """The request body as ``model``, parsed and validated in one pass (pydantic's own JSON parser);
    errors read like FastAPI's own body validation (``body.<field>``)."""
    raw = await request.body()
    return parse_body(raw, model, context)


def parse_body(raw: bytes, model: type[M], context: dict[str, Any] | None = None) -> M:
    try:
        return model.model_validate_json(raw, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in errors]) from exc


GatewayDep = Annotated[Gateway, Depends(_gateway)]
WaiterDep = Annotated[CompletionWaiter, Depends(_waiter)]
StreamsDep = Annotated[StreamHub, Depends(_streams)]
CallerDep = Annotated[Caller, Depends(_caller)]
SubmitterDep = Annotated[Caller, Depends(_submitter)]
AdminDep = Annotated[Caller, Depends(_admin)]
UsageReaderDep = Annotated[Caller, Depends(_usage_reader)]
MetricsReaderDep = Annotated[None, Depends(_metrics_reader)]
