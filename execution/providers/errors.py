"""Why a provider call failed, and whether sending it again could help.

    ProviderError (shared.errors, 502)
    └── ProviderCallError   kind, upstream_status, body, headers, retryable, retry_after_s, deployment

Every failure of an attempt ends here: HTTP error statuses via ``from_response``, httpx transport failures
via ``from_transport`` (the one place httpx exceptions are mapped), unusable 200s via ``malformed``.
Retry decisions are the retry policy's, not ours: we only say whether a retry *may* succeed.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any, Literal

import httpx
import orjson

from execution.providers.ratelimits import number
from shared.errors import ProviderError

Kind = Literal[
    "rate_limit", "overloaded", "server", "timeout", "connection",
    "bad_request", "auth", "not_found", "malformed", "refusal",
]
RETRYABLE_KINDS: frozenset[str] = frozenset(
    {"rate_limit", "overloaded", "server", "timeout", "connection", "malformed"}
)

_STATUS_KIND: dict[int, Kind] = {
    400: "bad_request", 401: "auth", 403: "auth", 404: "not_found", 408: "timeout", 409: "server",
    413: "bad_request", 422: "bad_request", 429: "rate_limit", 503: "overloaded", 529: "overloaded",
}
# A 429 that means "the account is out of money", not "slow down": retrying cannot help.
# Anthropic: error.details.error_code enforced_spend_limit_reached; OpenAI: insufficient_quota,
# credit_balance_exhausted, {organization,project}_spend_limit_exceeded, organization_usage_limit_exceeded.
_SPEND_LIMIT = re.compile(
    r"spend.?limit|credit.?balance|billing|insufficient_quota|exceeded your current quota|usage.?limit", re.I
)
_CONTENT_POLICY = re.compile(r"content_policy|content_filter|safety", re.I)
_BODY_EXCERPT = 2000
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
        retryable: bool | None = None, retry_after_s: float | None = None,
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

    def public_message(self) -> str:
        """What the tenant may read (see ``_PUBLIC``)."""
        text = _PUBLIC.get(self.kind, "the provider call failed")
        detail = provider_message(self.body) if self.body is not None else ""
        if self.kind in ("bad_request", "refusal") and detail:
            scrubbed = _SECRET_LIKE.sub("[redacted]", detail.replace(self.deployment, "[deployment]")
                                        if self.deployment else detail)
            text += f": {scrubbed[:300]}"
        return text

    def __repr__(self) -> str:
        return (f"ProviderCallError(kind={self.kind!r}, upstream_status={self.upstream_status}, "
                f"retryable={self.retryable}, retry_after_s={self.retry_after_s}, deployment={self.deployment!r})")


def from_response(status: int, headers: dict[str, str], content: bytes, deployment: str) -> ProviderCallError:
    """Classify an HTTP error status, reading the provider's own error message and retry hints."""
    body = parse_body(content)
    detail = provider_message(body)
    kind = _kind_for(status, detail)
    retryable = _should_retry(headers, kind, status, detail)
    return ProviderCallError(
        f"{deployment}: provider answered HTTP {status} ({kind}): {detail or 'no error message'}",
        kind=kind, deployment=deployment, upstream_status=status, body=body, headers=headers,
        retryable=retryable, retry_after_s=retry_after_s(headers),
    )


def from_transport(exc: httpx.HTTPError, deployment: str) -> ProviderCallError:
    """Map an httpx failure (no HTTP status) to a timeout or a connection error."""
    if isinstance(exc, httpx.TimeoutException):
        what = "timed out" if str(exc) == "" else f"timed out ({exc})"
        return ProviderCallError(
            f"{deployment}: the provider call {what}", kind="timeout", deployment=deployment
        )
    retryable = not isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL)
    return ProviderCallError(
        f"{deployment}: could not reach the provider: {type(exc).__name__}: {exc}",
        kind="connection", deployment=deployment, retryable=retryable,
    )


def malformed(
    deployment: str, why: str, status: int, headers: dict[str, str], content: bytes
) -> ProviderCallError:
    """A success status whose body the gateway cannot use; another attempt may well be fine."""
    return ProviderCallError(
        f"{deployment}: provider returned an unusable response: {why}",
        kind="malformed", deployment=deployment, upstream_status=status,
        body=parse_body(content), headers=headers, retryable=_header_retry(headers, default=True),
    )


def _kind_for(status: int, detail: str) -> Kind:
    kind = _STATUS_KIND.get(status)
    if kind is None:
        kind = "server" if status >= 500 else "bad_request"
    if kind == "bad_request" and _CONTENT_POLICY.search(detail):
        return "refusal"
    return kind


def _should_retry(headers: dict[str, str], kind: Kind, status: int, detail: str) -> bool:
    default = kind in RETRYABLE_KINDS
    if status == 429 and _SPEND_LIMIT.search(detail):
        default = False
    return _header_retry(headers, default)


def _header_retry(headers: dict[str, str], default: bool) -> bool:
    """``x-should-retry`` is the provider telling us outright; it wins both ways."""
    hint = headers.get("x-should-retry", "").strip().lower()
    if hint == "true":
        return True
    if hint == "false":
        return False
    return default


def retry_after_s(headers: dict[str, str], now: float | None = None) -> float | None:
    """Seconds the provider asks us to wait: ``retry-after-ms``, else ``retry-after`` (seconds or date)."""
    millis = number(headers.get("retry-after-ms"))
    if millis is not None:
        return max(millis / 1000.0, 0.0)
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def parse_body(content: bytes) -> dict[str, Any] | str:
    """The error body as JSON when it is JSON, else a text excerpt for the log."""
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        return content[:_BODY_EXCERPT].decode("utf-8", "replace")
    return parsed if isinstance(parsed, dict) else content[:_BODY_EXCERPT].decode("utf-8", "replace")


def provider_message(body: dict[str, Any] | str) -> str:
    """The provider's own words: OpenAI and Anthropic both nest them under ``error``."""
    if isinstance(body, str):
        return body[:500].strip()
    error = body.get("error")
    if isinstance(error, dict):
        details = error.get("details")
        details = details if isinstance(details, dict) else {}
        parts = [str(v) for v in (error.get("type"), error.get("code"), details.get("error_code"),
                                  error.get("message")) if v]
        return ": ".join(dict.fromkeys(parts))
    if isinstance(error, str):
        return error
    return str(body.get("message") or body.get("detail") or "")[:500]
