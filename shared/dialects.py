"""Dialects: the wire format a request was written in, and what a deployment of the other one receives.

A job keeps its request in the caller's dialect (``JobSpec.dialect``, ``jobs.dialect``):

    caller's dialect == deployment's   forwarded as written: only ``model`` replaced, gateway-only
                                       fields (``stream``, the tags in OpenAI ``metadata``) removed;
                                       every other field, unknown ones included, reaches the provider
    caller's dialect != deployment's   translated (``shared.translate``); a field with no equivalent
                                       is refused with a 400 naming it (``unsupported_parameter``),
                                       or left out when the deployment sets ``drop_unsupported``

OpenAI's other endpoints are dialects too: ``embeddings`` and ``completions`` (legacy) go as written to
an OpenAI-format deployment's endpoint of that name and nowhere else (``endpoint``); ``responses`` goes
through chat on any deployment (``shared.responses_api``).

Routing asks ``refusal`` before a deployment joins a job's chain, so a fallback that cannot carry
a request is skipped rather than failing it. Hints that never change the answer (OpenAI's ``store``,
``prompt_cache_key``, ``safety_identifier``, ``metadata``; Anthropic's ``cache_control``, on a block or
at the top level) are not
carried across dialects: the other provider has no place for them.

The rest of the gateway (estimates, routing, the cache key) reads a request through ``chat_view``:
its OpenAI form, plus the fields only its own dialect has, so two requests that would get the same
answer share a cache entry whatever their dialect, and a request with ``top_k`` never shares one with
a request without it.
"""

from __future__ import annotations

from typing import Any, Literal

from shared import responses_api
from shared.errors import InvalidRequest
from shared.translate import anthropic_to_openai_request, openai_to_anthropic_request

Dialect = Literal["openai", "anthropic", "embeddings", "completions", "responses"]
EMBEDDINGS, COMPLETIONS = "embeddings", "completions"  # OpenAI's other endpoints: only OpenAI-format deployments
RESPONSES = "responses"  # OpenAI's Responses API: through chat on every deployment (``shared.responses_api``)
DIALECTS: tuple[Dialect, ...] = ("openai", "anthropic", "embeddings", "completions", "responses")
JSON = dict[str, Any]
# The provider endpoint a request in each dialect goes to, on a deployment of each wire format.
_ENDPOINTS = {("openai", "openai"): "chat", ("anthropic", "openai"): "chat", ("openai", "anthropic"): "messages",
              ("anthropic", "anthropic"): "messages", (EMBEDDINGS, "openai"): EMBEDDINGS,
              (COMPLETIONS, "openai"): COMPLETIONS, (RESPONSES, "openai"): "chat", (RESPONSES, "anthropic"): "messages"}

# Gateway tags a caller may put in OpenAI ``metadata`` (``api.routes.common.tags_from``): not the provider's.
TAG_KEYS = frozenset({"feature", "priority", "task", "idempotency_key"})
_DELIVERY = frozenset({"stream", "stream_options"})  # how the gateway delivers; the provider call is whole

# What each translation carries over (some only with certain values, see ``_bad_value``), and the hints
# it leaves out because the other side has no place for them and the answer does not depend on them.
_CARRIED: dict[tuple[str, str], frozenset[str]] = {
    ("openai", "anthropic"): frozenset({
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "tools",
        "tool_choice", "parallel_tool_calls", "user", "n", "response_format", "logprobs"}),
    ("anthropic", "openai"): frozenset({
        "model", "messages", "max_tokens", "system", "stop_sequences", "temperature", "top_p", "tools",
        "tool_choice", "metadata"}),
}
_HINTS: dict[str, frozenset[str]] = {
    "openai": frozenset({"store", "prompt_cache_key", "safety_identifier", "metadata"}) | _DELIVERY,
    "anthropic": frozenset({"cache_control"}) | _DELIVERY,  # top-level: cache the prompt automatically
}


class UnsupportedParameter(InvalidRequest):
    """A field the deployment's dialect cannot say (and the deployment does not drop what it cannot)."""

    code = "unsupported_parameter"


def dialect_of(kind: str) -> Dialect:
    """A provider kind's dialect (every kind speaks one of the two)."""
    return "anthropic" if kind == "anthropic" else "openai"


def endpoint(source: str, target: str) -> str:
    """The endpoint of a ``target`` deployment a ``source`` request goes to: chat, messages, embeddings
    or completions. Raises ``UnsupportedParameter`` when the deployment has none for it."""
    found = _ENDPOINTS.get((source, target))
    if found is None:
        raise UnsupportedParameter(f"model: {target} deployments have no {source} API; use a model served by "
                                   "OpenAI-format deployments", param="model")
    return found


def unsupported(request: JSON, source: str, target: str) -> list[str]:
    """The top-level fields of ``request`` (written in ``source``) that ``target`` cannot carry."""
    if source == target:
        return []
    carried, hints = _CARRIED[(source, target)], _HINTS[source]
    return [key for key, value in request.items()
            if value is not None and key not in hints and (key not in carried or _bad_value(key, value))]


def _bad_value(key: str, value: Any) -> bool:
    """A carried field whose value has no equivalent (OpenAI -> Anthropic: one choice, text output)."""
    if key == "n":
        return value != 1
    if key == "response_format":
        return not (isinstance(value, dict) and value.get("type") == "text")
    if key == "logprobs":
        return bool(value)
    return False


def refusal(request: JSON, source: str, target: str, *, drop: bool = False) -> InvalidRequest | None:
    """Why ``request`` cannot go to a ``target`` deployment (None: it can): the 400 that names the first
    field it cannot carry. ``drop``: the deployment leaves out what it cannot carry."""
    try:
        provider_body(request, source, target, model="check", default_max_tokens=1, drop=drop)
    except InvalidRequest as exc:
        return exc
    return None


def check(request: JSON, source: str, target: str, *, drop: bool = False) -> str | None:
    """The field ``refusal`` names (None: the request can go to a ``target`` deployment)."""
    found = refusal(request, source, target, drop=drop)
    return None if found is None else found.param or found.message


def provider_body(request: JSON, source: str, target: str, *, model: str, default_max_tokens: int,
                  drop: bool = False) -> JSON:
    """What a ``target`` deployment serving ``model`` receives for ``request`` (see the module docstring)."""
    if endpoint(source, target) == source or source == target:
        return _as_written(request, source, model)
    if source == RESPONSES:
        return provider_body(responses_api.to_chat(request), "openai", target, model=model,
                             default_max_tokens=default_max_tokens, drop=drop)
    refused = unsupported(request, source, target)
    if refused and not drop:
        raise _refusal(refused, source, target)
    kept = {k: v for k, v in request.items() if k not in refused}
    try:
        if source == "openai":
            return openai_to_anthropic_request(kept, model, default_max_tokens)
        return {**anthropic_to_openai_request(kept), "model": model}
    except UnsupportedParameter:
        raise
    except InvalidRequest as exc:
        raise UnsupportedParameter(f"{exc.message} (translating this {source} request for a {target} model)",
                                   param=exc.param) from exc


def _as_written(request: JSON, dialect: str, model: str) -> JSON:
    body = {k: v for k, v in request.items() if k not in _DELIVERY}
    if dialect != "anthropic" and isinstance(body.get("metadata"), dict):
        meta = {k: v for k, v in body["metadata"].items() if k not in TAG_KEYS}
        body.pop("metadata")
        if meta:
            body["metadata"] = meta
    body["model"] = model
    return body


def _refusal(fields: list[str], source: str, target: str) -> UnsupportedParameter:
    names = ", ".join(fields)
    return UnsupportedParameter(
        f"{names}: an {target} model cannot honour {'this field' if len(fields) == 1 else 'these fields'} of an "
        f"{source} request, and the gateway does not drop what it cannot translate. Remove "
        f"{'it' if len(fields) == 1 else 'them'}, use a model served by {source} deployments only, or ask the "
        f"gateway's operators to set drop_unsupported on the {target} deployment.", param=fields[0])


def chat_view(request: JSON, dialect: str) -> JSON:
    """The request as the rest of the gateway reads it: its OpenAI form, plus the fields only its own
    dialect has (``top_k``, ``thinking`` ...). Never raises: a body the translation cannot read is
    read as its messages' text, good enough to estimate and route."""
    if dialect == "openai":
        return request
    if dialect in (EMBEDDINGS, COMPLETIONS):
        return _prompt_view(request, dialect)
    if dialect == RESPONSES:
        return _responses_view(request)
    extra = {k: v for k, v in request.items() if k not in _CARRIED[("anthropic", "openai")] and k not in _DELIVERY}
    try:
        view = anthropic_to_openai_request(request)
    except InvalidRequest:
        view = {"model": request.get("model"), "max_tokens": request.get("max_tokens"),
                "messages": [_rough_message(m) for m in request.get("messages") or [] if isinstance(m, dict)]}
    return {**view, **extra}


def _prompt_view(request: JSON, dialect: str) -> JSON:
    """An embeddings or legacy completions request as one user turn of its input (for the estimate), with
    every field of its own, and the endpoint, so it never shares a cache entry with a chat request."""
    given = request.get("input" if dialect == EMBEDDINGS else "prompt")
    texts = given if isinstance(given, list) else [given]
    content = "\n".join(t if isinstance(t, str) else " x" * (len(t) if isinstance(t, list) else 1) for t in texts)
    return {**request, "endpoint": dialect, "messages": [{"role": "user", "content": content}]}


def _responses_view(request: JSON) -> JSON:
    """A Responses request as the chat request it is sent as (as its input's text, when it cannot be)."""
    try:
        return responses_api.to_chat(request)
    except InvalidRequest:
        text = request.get("input") if isinstance(request.get("input"), str) else repr(request.get("input"))
        return {"model": request.get("model"), "max_completion_tokens": request.get("max_output_tokens"),
                "messages": [{"role": "user", "content": text}]}


def output_cap(request: JSON, dialect: str, default: int) -> int:
    """The output a request allows, per choice: none for embeddings, 16 for a legacy completion that
    names no ``max_tokens`` (OpenAI's default), else its cap or ``default``."""
    if dialect == EMBEDDINGS:
        return 0
    cap = request.get("max_completion_tokens") or request.get("max_tokens") or request.get("max_output_tokens")
    return int(cap or (16 if dialect == COMPLETIONS else default))


def _rough_message(message: JSON) -> JSON:
    content = message.get("content")
    return {"role": "assistant" if message.get("role") == "assistant" else "user",
            "content": content if isinstance(content, str) else repr(content)}
