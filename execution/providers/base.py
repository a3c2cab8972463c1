"""One attempt at one deployment: what goes in (an OpenAI chat request), what comes out, what can fail.

An adapter sends over the process's pooled client (``http.shared_client``) and always hands back the
OpenAI ``chat.completion`` form, whatever the provider speaks. ``call`` raises:

- ``shared.errors.InvalidRequest`` when the request cannot be said in the provider's format
  (nothing was sent; the caller must change the request),
- ``ProviderCallError`` for anything that went wrong once sending started.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
import orjson

from execution.providers import errors, http
from shared.config import DeploymentConfig, ProviderConfig


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the provider billed, as genai-prices counts them: ``input_tokens`` includes the cache reads
    (``cached_input_tokens``) and writes (``cache_write_tokens``, of which ``cache_write_1h_tokens`` were
    written for an hour), ``output_tokens`` includes the ``reasoning_tokens``. Each kind has its own price."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage:
        """OpenAI's ``usage``: cached prompt tokens and reasoning tokens are details of the two totals."""
        usage = usage or {}
        prompt = usage.get("prompt_tokens_details") or {}
        completion = usage.get("completion_tokens_details") or {}
        return cls(
            input_tokens=_count(usage.get("prompt_tokens")),
            output_tokens=_count(usage.get("completion_tokens")),
            cached_input_tokens=_count(prompt.get("cached_tokens")),
            reasoning_tokens=_count(completion.get("reasoning_tokens")),
        )

    @classmethod
    def from_anthropic(cls, usage: dict[str, Any] | None) -> Usage:
        """Anthropic's ``usage``: its ``input_tokens`` leaves out cache reads and writes, which are billed at
        their own prices (a write for an hour dearer than one for five minutes)."""
        usage = usage or {}
        read = _count(usage.get("cache_read_input_tokens"))
        written = _count(usage.get("cache_creation_input_tokens"))
        by_ttl = usage.get("cache_creation")
        by_ttl = by_ttl if isinstance(by_ttl, dict) else {}
        return cls(
            input_tokens=_count(usage.get("input_tokens")) + read + written,
            output_tokens=_count(usage.get("output_tokens")),
            cached_input_tokens=read,
            cache_write_tokens=written,
            cache_write_1h_tokens=min(written, _count(by_ttl.get("ephemeral_1h_input_tokens"))),
        )


def _count(value: Any) -> int:
    """A token count from a provider's JSON: anything but a non-negative whole number counts as 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(slots=True)
class ProviderResult:
    """A successful attempt; ``body`` is an OpenAI ``chat.completion`` dict, already translated."""

    body: dict[str, Any]
    status: int
    headers: dict[str, str]
    usage: Usage
    latency_ms: float
    deployment: str


class ProviderAdapter:
    """Sends one chat request to one deployment; subclasses supply the wire format."""

    kind: ClassVar[str]

    def __init__(
        self, deployment: DeploymentConfig, provider: ProviderConfig, client: httpx.Client | None = None
    ) -> None:
        self.deployment = deployment
        self.provider = provider
        self._client = client
        self.url = ""
        self.params: dict[str, str] | None = None
        self.headers: dict[str, str] = {}

    @property
    def client(self) -> httpx.Client:
        return self._client or http.shared_client()

    def call(self, request: dict[str, Any], headers: dict[str, str] | None = None) -> ProviderResult:
        """Send ``request`` (OpenAI chat format) as ``deployment.model``; one attempt, no retries.
        ``headers`` go with this call only (its trace context)."""
        content = orjson.dumps(self.encode(request))
        started = time.perf_counter()
        raw = self._send(content, {**self.headers, **headers} if headers else self.headers)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if raw.status >= 300:
            raise errors.from_response(raw.status, raw.headers, raw.content, self.deployment.name)
        payload, body = self._decode(raw)
        return ProviderResult(
            body=body, status=raw.status, headers=raw.headers, usage=self.usage_of(payload),
            latency_ms=latency_ms, deployment=self.deployment.name,
        )

    def _send(self, content: bytes, headers: dict[str, str]) -> http.RawResponse:
        try:
            return http.post(
                self.client, self.url, content=content, headers=headers, params=self.params,
                timeouts=self.deployment.timeouts,
            )
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, self.deployment.name) from exc

    def _decode(self, raw: http.RawResponse) -> tuple[dict[str, Any], dict[str, Any]]:
        """The provider's payload and its OpenAI ``chat.completion`` form."""
        try:
            payload = orjson.loads(raw.content)
        except orjson.JSONDecodeError as exc:
            raise self._malformed(raw, f"body is not JSON ({exc})") from exc
        problem = self.problem_with(payload) if isinstance(payload, dict) else "body is not a JSON object"
        if problem:
            raise self._malformed(raw, problem)
        try:
            return payload, self.to_openai(payload)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._malformed(raw, f"cannot translate the body ({exc})") from exc

    def _malformed(self, raw: http.RawResponse, why: str) -> errors.ProviderCallError:
        return errors.malformed(self.deployment.name, why, raw.status, raw.headers, raw.content)

    # Wire format hooks ------------------------------------------------------------------------------

    def encode(self, request: dict[str, Any]) -> dict[str, Any]:
        """The provider's request body for an OpenAI chat request."""
        raise NotImplementedError

    def stream_body(self, request: dict[str, Any]) -> dict[str, Any]:
        """The provider's request body for a streamed call (``execution.providers.streaming``)."""
        return {**self.encode(request), "stream": True}

    def problem_with(self, payload: dict[str, Any]) -> str | None:
        """Why a 2xx body cannot be used, or None when it can."""
        raise NotImplementedError

    def to_openai(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI ``chat.completion`` for a usable provider body."""
        raise NotImplementedError

    def usage_of(self, payload: dict[str, Any]) -> Usage:
        """What the provider billed, read from its own payload (a translation may drop a kind of token)."""
        raise NotImplementedError
