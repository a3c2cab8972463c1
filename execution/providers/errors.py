"""Why a provider call failed, and whether sending it again could help: the wire's failures turned
into ``shared.errors.ProviderCallError``.

Every failure of an attempt ends here: HTTP error statuses via ``from_response``, httpx transport failures
via ``from_transport`` (the one place httpx exceptions are mapped), unusable 200s via ``malformed``.
Retry decisions are the retry policy's, not ours: we only say whether a retry *may* succeed.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

import httpx
import orjson

from execution.providers.ratelimits import number
from shared.errors import RETRYABLE_KINDS, Kind, ProviderCallError

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


def from_response(status: int, headers: dict[str, str], content: bytes, deployment: str) -> ProviderCallError:
    """Classify an HTTP error status, reading the provider's own error message and retry hints."""
    body = parse_body(content)
    detail = provider_message(body)
    kind = _kind_for(status, detail)
    retryable = _should_retry(headers, kind, status, detail)
    return ProviderCallError(
        f"{deployment}: provider answered HTTP {status} ({kind}): {detail or 'no error message'}",
        kind=kind, deployment=deployment, upstream_status=status, body=body, headers=headers,
        retryable=retryable, retry_after_s=retry_after_s(headers), detail=detail,
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
