"""Dependencies routes declare with ``Annotated`` aliases, so no route builds its own clients."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from api.service import Gateway
from api.waiter import CompletionWaiter
from shared.errors import AuthError


async def _gateway(request: Request) -> Gateway:
    return request.app.state.gateway  # type: ignore[no-any-return]


async def _waiter(request: Request) -> CompletionWaiter:
    return request.app.state.waiter  # type: ignore[no-any-return]


async def _api_key(authorization: Annotated[str | None, Header()] = None,
             x_api_key: Annotated[str | None, Header()] = None) -> str:
    """The caller's key: ``Authorization: Bearer`` (OpenAI SDK) or ``x-api-key`` (Anthropic SDK)."""
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if x_api_key:
        return x_api_key.strip()
    raise AuthError("Missing API key. Send 'Authorization: Bearer <key>' (or 'x-api-key: <key>'); "
                    "create one with 'gateway keys create --tenant <tenant>'.")


GatewayDep = Annotated[Gateway, Depends(_gateway)]
WaiterDep = Annotated[CompletionWaiter, Depends(_waiter)]
ApiKey = Annotated[str, Depends(_api_key)]
