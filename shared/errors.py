"""The gateway's exception tree, all of it here; the api maps it to HTTP in one place (``api/errors.py``).

    GatewayError                 status  OpenAI error type
    ├── ConfigError                 500  (start-up only: bad config file)
    ├── InvalidRequest              400  invalid_request_error
    │   ├── UnknownModel            404  invalid_request_error (code model_not_found)
    │   ├── SensitiveDataBlocked    400  invalid_request_error (code sensitive_data_blocked: a ``block`` detector)
    │   └── InjectionBlocked        400  invalid_request_error (code prompt_injection_blocked: the screen)
    ├── AuthError                   401  authentication_error (missing, invalid, revoked key, disabled tenant)
    ├── PermissionDenied            403  permission_error (a lane the key may not use; admin routes off)
    ├── NotFound                    404  invalid_request_error
    ├── Conflict                    409  invalid_request_error
    ├── PayloadTooLarge             413  invalid_request_error
    ├── Overloaded                  429  rate_limit_error (carries retry_after)
    │   └── QuotaExceeded           429  insufficient_quota: a hard dollar budget is spent (retry_after: its reset)
    ├── ProviderError               502  upstream failure after the gateway gave up
    │   └── ProviderCallError            one failed attempt; its status follows its kind (``answer_for``):
    │                                    400 bad_request/refusal, 504 timeout, else 502
    ├── Unavailable                 503  api_error: the gateway's own Redis or capacity is out
    └── GatewayTimeout              504  timeout_error: a sync wait ran out (the job goes on)

``execution/providers/errors.py`` turns the wire's failures (HTTP statuses, httpx exceptions, unusable
answers) into ``ProviderCallError``; ``is_outage`` tells an outage of Redis or the store (retry the
work) from a fault of the job (fail it).
"""

from __future__ import annotations

import re
from typing import Any, Literal

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


class SensitiveDataBlocked(InvalidRequest):
    """A value the policy blocks was found (``shared.privacy.redaction``); nothing was stored or sent."""

    code = "sensitive_data_blocked"

    def __init__(self, message: str, *, detector: str, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.detector = detector


class InjectionBlocked(InvalidRequest):
    """The injection screen scored the call over the threshold of a ``block`` policy (``shared.privacy.screen``)."""

    code = "prompt_injection_blocked"


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


class QuotaExceeded(Overloaded):
    """A hard dollar budget cannot take the call (OpenAI's ``insufficient_quota`` shape); the message names
    the budget, its window, what was spent and when it resets."""

    type = "insufficient_quota"
    code = "insufficient_quota"


class ProviderError(GatewayError):
    status = 502
    type = "upstream_error"
    code = "provider_error"


Kind = Literal[
    "rate_limit", "overloaded", "server", "timeout", "connection",
    "bad_request", "auth", "not_found", "malformed", "refusal", "caller_left",
]
RETRYABLE_KINDS: frozenset[str] = frozenset(
    {"rate_limit", "overloaded", "server", "timeout", "connection", "malformed"}
)

# What the caller sees if this is the last word: their request is at fault (400) or the upstream (5xx).
_GATEWAY_ANSWER: dict[str, tuple[int, str]] = {
    "bad_request": (400, "invalid_request_error"),
    "refusal": (400, "invalid_request_error"),
    "timeout": (504, "upstream_error"),
}


# What a tenant is told about a failure: the provider's own text can carry the tail of the provider key,
# account and deployment names, so only a request the provider rejected keeps its (scrubbed) detail,
# since the caller must change something. Operators read the whole text in the attempt record and logs.
_PUBLIC: dict[str, str] = {
    "rate_limit": "the provider refused the call for its rate limit",
    "overloaded": "the provider was overloaded",
    "server": "the provider failed with a server error",
    "timeout": "the provider did not answer in time",
    "connection": "the provider could not be reached",
    "auth": "the provider refused the gateway's credentials; the gateway's operators can see why",
    "not_found": "the provider does not serve the model this route is configured with",
    "malformed": "the provider's answer could not be used",
    "bad_request": "the provider rejected the request",
    "refusal": "the provider refused the request under its content policy",
    "caller_left": "the caller disconnected from the stream and did not resume it; the call was aborted",
}
_SECRET_LIKE = re.compile(r"\b(?:sk|gw|key|pk|rk)[-_][\w*.-]{2,}|\*{3,}\w*", re.I)


def answer_for(kind: str) -> tuple[int, str]:
    """The status and error type a caller gets for a job that ended on a failure of ``kind``."""
    return _GATEWAY_ANSWER.get(kind, (ProviderError.status, ProviderError.type))


class ProviderCallError(ProviderError):
    """One failed attempt at one deployment, with what the retry policy needs to decide.

    ``status``/``type`` are what the api answers when the gateway gives up (GatewayError's meaning):
    400 when the provider rejected the request itself, 504 after a timeout, else 502. The provider's
    own HTTP status is ``upstream_status`` (None when no answer came: timeout, connection failure).
    """

    def __init__(
        self, message: str, *, kind: Kind, deployment: str = "", upstream_status: int | None = None,
        body: dict[str, Any] | str | None = None, headers: dict[str, str] | None = None,
        retryable: bool | None = None, retry_after_s: float | None = None, detail: str = "",
    ) -> None:
        super().__init__(message, code=f"provider_{kind}")
        self.kind = kind
        self.deployment = deployment
        self.upstream_status = upstream_status
        self.status, self.type = answer_for(kind)
        self.body = body
        self.headers = headers or {}
        self.retryable = kind in RETRYABLE_KINDS if retryable is None else retryable
        self.retry_after_s = retry_after_s
        self.detail = detail  # the provider's own words (for operators; see public_message)

    def public_message(self) -> str:
        """What the tenant may read (see ``_PUBLIC``)."""
        text = _PUBLIC.get(self.kind, "the provider call failed")
        detail = self.detail
        if self.kind in ("bad_request", "refusal") and detail:
            scrubbed = _SECRET_LIKE.sub("[redacted]", detail.replace(self.deployment, "[deployment]")
                                        if self.deployment else detail)
            text += f": {scrubbed[:300]}"
        return text

    def __repr__(self) -> str:
        return (f"ProviderCallError(kind={self.kind!r}, upstream_status={self.upstream_status}, "
                f"retryable={self.retryable}, retry_after_s={self.retry_after_s}, deployment={self.deployment!r})")


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
