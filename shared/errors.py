"""The gateway's exception tree; the api maps it to HTTP in one place (``api/errors.py``).

    GatewayError                 status  OpenAI error type
    ├── ConfigError                 500  (start-up only: bad config file)
    ├── InvalidRequest              400  invalid_request_error
    │   └── UnknownModel            404  invalid_request_error (code model_not_found)
    ├── AuthError                   401  authentication_error
    ├── PermissionDenied            403  permission_error
    ├── NotFound                    404  invalid_request_error
    ├── Conflict                    409  invalid_request_error
    ├── PayloadTooLarge             413  invalid_request_error
    ├── Overloaded                  429  rate_limit_error (carries retry_after)
    ├── ProviderError               502  upstream failure after the gateway gave up
    │   └── ProviderCallError       4xx/502/504: one failed attempt (execution/providers/errors.py)
    ├── Unavailable                 503  api_error: the gateway's own Redis or capacity is out
    └── GatewayTimeout              504  timeout_error: a sync wait ran out (the job goes on)
"""

from __future__ import annotations

ECHO_CHARS = 64  # the most of a caller-supplied value an error message quotes


def clip(text: str, limit: int = ECHO_CHARS) -> str:
    """``text`` cut to ``limit`` characters plus its original length: a 10 kB header, model name or
    field name in an error message is not sent back (and logged) whole."""
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} characters)"


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """A caller-supplied value quoted in an error message: its repr, cut as ``clip`` cuts."""
    text = value if isinstance(value, str) else repr(value)
    return repr(value) if len(text) <= limit else f"{text[:limit]!r}… ({len(text)} characters)"


def is_outage(exc: BaseException) -> bool:
    """Redis or the SQL store failing, not the job: whoever caught it must retry, never fail the job."""
    import redis
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, redis.RedisError | OSError | OperationalError | InterfaceError)


class GatewayError(Exception):
    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers = headers or {}
        if code:
            self.code = code


class ConfigError(GatewayError):
    code = "config_error"


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class UnknownModel(InvalidRequest):
    status = 404
    code = "model_not_found"


class AuthError(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    type = "permission_error"
    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class Overloaded(GatewayError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float = 1.0, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.headers.setdefault("retry-after", str(max(1, round(retry_after))))


class ProviderError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "provider_error"


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "queue_unavailable"

    def __init__(self, message: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.headers.setdefault("retry-after", "2")  # every 503 says when to come back


class GatewayTimeout(GatewayError):
    status = 504
    type = "timeout_error"
    code = "gateway_timeout"
