"""One attempt at one deployment: what goes in (a request in the caller's dialect), what comes out, what
can fail.

The request goes out as its caller wrote it when the provider speaks its dialect, translated when not
(``shared.dialects``). An adapter sends over the process's pooled client (``http.shared_client``) and
always hands back the OpenAI ``chat.completion`` form, whatever the provider speaks; the usage is read
from the provider's own payload, so cache and reasoning tokens reach the cost. ``call`` raises:

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

from execution.providers import errors, http, lean_http
from shared.config import DeploymentConfig, ProviderConfig
from shared.dialects import COMPLETIONS, EMBEDDINGS, endpoint, provider_body


def _embeddings_problem(payload: dict[str, Any]) -> str | None:
    data = payload.get("data")
    if not isinstance(data, list) or not all(isinstance(item, dict) and "embedding" in item for item in data):
        return "no list of embeddings in the body"
    return None


def _completions_problem(payload: dict[str, Any]) -> str | None:
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, dict) for c in choices):
        return "no choices in the body"
    return None


# Endpoints whose answers the caller gets in the provider's own form, and how to tell one is usable.
AS_RECEIVED = {EMBEDDINGS: _embeddings_problem, COMPLETIONS: _completions_problem}


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
    dialect: ClassVar[str]  # the wire format it speaks (``shared.dialects``)

    def __init__(
        self, deployment: DeploymentConfig, provider: ProviderConfig, client: httpx.Client | None = None
    ) -> None:
        self.deployment = deployment
        self.provider = provider
        self._client = client
        self.url = ""  # the chat endpoint (chat completions, messages)
        self.endpoints: dict[str, str] = {}  # the others it has (``shared.dialects.endpoint``): their URLs
        self.params: dict[str, str] | None = None
        self.headers: dict[str, str] = {}

    @property
    def client(self) -> httpx.Client:
        return self._client or http.shared_client()

    @property
    def own_client(self) -> httpx.Client | None:
        """The client this adapter was given (tests), if any: its calls then all go through it."""
        return self._client

    def call(self, request: dict[str, Any], headers: dict[str, str] | None = None, *,
             dialect: str = "openai") -> ProviderResult:
        """Send ``request`` (written in ``dialect``) as ``deployment.model``; one attempt, no retries.
        ``headers`` go with this call only (its trace context)."""
        where = endpoint(dialect, self.dialect)
        content = orjson.dumps(self.encode(request, dialect))
        started = time.perf_counter()
        raw = self._send(content, {**self.headers, **headers} if headers else self.headers,
                         self.endpoints.get(where, self.url))
        latency_ms = (time.perf_counter() - started) * 1000.0
        if raw.status >= 300:
            raise errors.from_response(raw.status, raw.headers, raw.content, self.deployment.name)
        payload, body = self._decode(raw, where, native=dialect == self.dialect)
        return ProviderResult(
            body=body, status=raw.status, headers=raw.headers, usage=self.usage_of(payload),
            latency_ms=latency_ms, deployment=self.deployment.name,
        )

    def _send(self, content: bytes, headers: dict[str, str], url: str | None = None) -> http.RawResponse:
        url = url or self.url
        try:
            target = lean_http.target_of(url) if self.own_client is None and lean_http.usable() else None
            if target is not None:  # the process's own pool: the lean client (``lean_http``)
                return lean_http.post(target, content=content, headers=headers, params=self.params,
                                      timeouts=self.deployment.timeouts)
            return http.post(
                self.client, url, content=content, headers=headers, params=self.params,
                timeouts=self.deployment.timeouts,
            )
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, self.deployment.name) from exc

    def _decode(self, raw: http.RawResponse, where: str = "chat",
                native: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """The provider's payload and the job's answer: the payload itself when the caller wrote in the
        provider's dialect (``native``: nothing of it is lost to a translation and back), else its OpenAI
        ``chat.completion`` form (an embeddings or legacy completions answer is kept as it came: the
        caller asked in that form)."""
        try:
            payload = orjson.loads(raw.content)
        except orjson.JSONDecodeError as exc:
            raise self._malformed(raw, f"body is not JSON ({exc})") from exc
        chat = where not in AS_RECEIVED
        if not isinstance(payload, dict):
            problem: str | None = "body is not a JSON object"
        else:
            problem = self.problem_with(payload) if chat else AS_RECEIVED[where](payload)
        if problem:
            raise self._malformed(raw, problem)
        try:
            return payload, self.to_openai(payload) if chat and not native else payload
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._malformed(raw, f"cannot translate the body ({exc})") from exc

    def _malformed(self, raw: http.RawResponse, why: str) -> errors.ProviderCallError:
        return errors.malformed(self.deployment.name, why, raw.status, raw.headers, raw.content)

    # Wire format hooks ------------------------------------------------------------------------------

    def encode(self, request: dict[str, Any], dialect: str = "openai") -> dict[str, Any]:
        """The provider's request body for ``request``, written in ``dialect``: as written when it is the
        provider's, else translated (``shared.dialects.provider_body``)."""
        deployment = self.deployment
        return provider_body(request, dialect, self.dialect, model=deployment.model,
                             default_max_tokens=deployment.default_max_tokens, drop=deployment.drop_unsupported)

    def stream_body(self, request: dict[str, Any], dialect: str = "openai") -> dict[str, Any]:
        """The provider's request body for a streamed call (``execution.providers.streaming``)."""
        return {**self.encode(request, dialect), "stream": True}

    def problem_with(self, payload: dict[str, Any]) -> str | None:
        """Why a 2xx body cannot be used, or None when it can."""
        raise NotImplementedError

    def to_openai(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The OpenAI ``chat.completion`` for a usable provider body."""
        raise NotImplementedError

    def usage_of(self, payload: dict[str, Any]) -> Usage:
        """What the provider billed, read from its own payload (a translation may drop a kind of token)."""
        raise NotImplementedError
