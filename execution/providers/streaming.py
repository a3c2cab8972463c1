"""One streamed call to one deployment: the provider's events as they arrive, then the whole answer.

    with open_stream(adapter, request, headers, dialect=...) as call:  # raises like ``ProviderAdapter.call``
        for event in call.events():                        # ``shared.stream_translate.Event``
            ...                                            # leaving the block early aborts the call
        result = call.result()                             # a ``ProviderResult``, as ``call`` returns it

The gateway always asks for the usage (OpenAI's ``stream_options.include_usage``; Anthropic sends it
anyway): the reservation settles on it. The events are assembled as they pass (``ChatAssembler``,
``MessagesAssembler``, or ``CompletionAssembler`` for a legacy completion, streamed from the
deployment's completions endpoint and kept as it came), so the answer stored, cached and billed is
the one the caller was streamed.

What can fail, and where it surfaces (always a ``ProviderCallError``):

- before the first event: an error status, an answer that is not an event stream (``open_stream``);
- after it: a dropped connection, a read or total timeout, an event that is not JSON, an ``error``
  event (Anthropic) or chunk (OpenAI) in the stream (``events``), a stream that ends before the
  provider's last event (``result``). ``produced`` then says what was streamed so far, for the
  settlement.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from httpx_sse import EventSource, ServerSentEvent

from execution.providers import errors, http, lean_http
from execution.providers.base import AS_RECEIVED, ProviderResult, Usage
from shared.dialects import COMPLETIONS, endpoint
from shared.errors import Kind, ProviderCallError
from shared.stream_translate import ChatAssembler, CompletionAssembler, Event, MessagesAssembler
from shared.tokens import count_tokens

if TYPE_CHECKING:
    from execution.providers.base import ProviderAdapter


class ProviderStream:
    """An open streamed call (see the module docstring)."""

    def __init__(self, adapter: ProviderAdapter, response: httpx.Response | lean_http.Stream, started: float,
                 deadline: float, where: str = "chat") -> None:
        self.adapter = adapter
        self.response = response
        self.started = started
        self.deadline = deadline
        self.where = where  # the endpoint called (``shared.dialects.endpoint``)
        self.assembler: ChatAssembler | MessagesAssembler | CompletionAssembler = (
            CompletionAssembler() if where == COMPLETIONS
            else MessagesAssembler() if adapter.kind == "anthropic" else ChatAssembler())
        self.events_seen = 0
        self.complete = False  # the provider's last event came (OpenAI's [DONE], Anthropic's message_stop)
        self.headers = _lower(response.headers)

    def events(self) -> Iterator[Event]:
        name = self.adapter.deployment.name
        try:
            response = self.response
            for sse in response.events() if isinstance(response, lean_http.Stream) else \
                    EventSource(response).iter_sse():
                event = self._read(sse)
                if event is None:
                    continue
                self.assembler.feed(event)
                self.events_seen += 1
                self.complete = event.data is None or event.name == "message_stop"
                yield event
                if time.monotonic() > self.deadline:
                    raise http.TotalTimeout("total timeout exceeded while streaming")
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, name) from exc

    def result(self) -> ProviderResult:
        """The whole answer, as ``ProviderAdapter.call`` would have returned it."""
        adapter = self.adapter
        payload = self.assembler.body()
        as_received = AS_RECEIVED.get(self.where)
        problem = as_received(payload) if as_received is not None else adapter.problem_with(payload)
        if problem or not self.complete:
            raise self._broken(problem or "the stream ended before the provider's last event")
        try:
            body = payload if as_received is not None else adapter.to_openai(payload)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise self._broken(f"cannot translate the streamed answer ({exc})") from exc
        return ProviderResult(body=body, status=self.response.status_code, headers=self.headers,
                              usage=adapter.usage_of(payload), latency_ms=(time.perf_counter() - self.started) * 1000,
                              deployment=adapter.deployment.name)

    def produced(self, prompt_tokens: int) -> Usage:
        """What a stream that broke off had cost: the provider's counts where it sent them (Anthropic's
        input in ``message_start``), else ``prompt_tokens``, and the text streamed so far, counted."""
        try:
            payload = self.assembler.body()
        except ValueError:  # a tool call's arguments cut off mid-JSON
            payload = {}
        reported = self.adapter.usage_of(payload)
        output = count_tokens(_streamed_text(payload))
        return Usage(input_tokens=reported.input_tokens or prompt_tokens,
                     output_tokens=max(reported.output_tokens, output))

    def _read(self, sse: ServerSentEvent) -> Event | None:
        """The provider's event, or None for one that carries nothing (a comment, an empty data)."""
        if not sse.data:
            return None
        if sse.data.strip() == "[DONE]":
            return Event(None, None)
        try:
            data = orjson.loads(sse.data)
        except orjson.JSONDecodeError as exc:
            raise self._broken(f"an event is not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise self._broken("an event is not a JSON object")
        if sse.event == "error" or data.get("type") == "error" or "error" in data:
            raise self._failed(data)
        return Event(sse.event if sse.event and sse.event != "message" else None, data)

    def _broken(self, why: str) -> ProviderCallError:
        return errors.malformed(self.adapter.deployment.name, why, self.response.status_code, self.headers, b"")

    def _failed(self, data: dict[str, Any]) -> ProviderCallError:
        """An error the provider sent inside the stream (Anthropic's ``overloaded_error`` mid-answer)."""
        detail = errors.provider_message(data)
        kind: Kind = "overloaded" if "overloaded" in detail else "server"
        name = self.adapter.deployment.name
        return ProviderCallError(f"{name}: the provider sent an error in the stream: {detail}", kind=kind,
                                 deployment=name, upstream_status=self.response.status_code, body=data,
                                 headers=self.headers, detail=detail)


@contextlib.contextmanager
def open_stream(adapter: ProviderAdapter, request: dict[str, Any], headers: dict[str, str] | None = None, *,
                dialect: str = "openai") -> Iterator[ProviderStream]:
    """Send ``request`` (written in ``dialect``: forwarded as written to a provider of that dialect, else
    translated) as a streamed call; the call is closed (aborted, if it was still streaming) when the
    block ends."""
    name, timeouts = adapter.deployment.name, adapter.deployment.timeouts
    content = orjson.dumps(adapter.stream_body(request, dialect))
    where = endpoint(dialect, adapter.dialect)
    started = time.perf_counter()
    url = adapter.endpoints.get(where, adapter.url)
    sent = {**adapter.headers, **headers} if headers else adapter.headers
    target = lean_http.target_of(url) if adapter.own_client is None and lean_http.usable() else None
    try:
        with lean_http.open_stream(target, content=content, headers=sent, params=adapter.params,
                                   timeouts=timeouts) if target is not None else \
                http.open_stream(adapter.client, url, content=content, headers=sent, params=adapter.params,
                                 timeouts=timeouts) as response:
            if response.status_code >= 300:
                raise errors.from_response(response.status_code, _lower(response.headers), response.read(), name)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                raise errors.malformed(name, "the answer to a streamed call is not an event stream",
                                       response.status_code, _lower(response.headers), response.read())
            yield ProviderStream(adapter, response, started, time.monotonic() + timeouts.total, where)
    except httpx.HTTPError as exc:
        raise errors.from_transport(exc, name) from exc


def _streamed_text(payload: dict[str, Any]) -> str:
    """The text and tool arguments of an assembled answer, in either dialect."""
    parts: list[str] = []
    for choice in payload.get("choices") or []:
        message = choice.get("message") or {}
        parts.append(message.get("content") or choice.get("text") or "")
        parts += [(call.get("function") or {}).get("arguments") or "" for call in message.get("tool_calls") or []]
    for block in payload.get("content") or []:
        parts.append(block.get("text") or orjson.dumps(block.get("input") or "").decode())
    return "".join(parts)


def _lower(headers: httpx.Headers | dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}
