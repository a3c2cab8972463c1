"""The canonical form of a request: everything that changes the answer, and nothing that does not.

Two requests get the same exact entry when their canonical forms are equal: the same messages
(content as text when it is only text, surrounding whitespace dropped), tools, response format,
sampling parameters, output cap and seed, for the same model. Key order and JSON formatting never
matter, and neither does the dialect: ``/v1/messages`` is translated to the OpenAI form before it gets
here (``shared.translate``), so an Anthropic request and its OpenAI twin are one entry.

The semantic scope is the same digest with the last user turn's text left out: two requests in one
scope differ only in that text, which the embedding and the guard compare (``shared.cache.semantic``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

# Fields that never change the answer: who asked, how it is delivered, gateway bookkeeping.
_IGNORED = frozenset({"model", "user", "metadata", "stream", "stream_options", "store", "service_tier",
                      "parallel_tool_calls"})
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens")
_REALS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")  # 0 and 0.0 are one value


def canonical(payload: dict[str, Any]) -> dict[str, Any]:
    """The request as the cache compares it (see the module docstring)."""
    out = {k: v for k, v in payload.items() if k not in _IGNORED and v is not None and k not in _OUTPUT_CAPS}
    cap = next((payload[k] for k in _OUTPUT_CAPS if payload.get(k) is not None), None)
    if cap is not None:
        out["max_tokens"] = cap
    if isinstance(out.get("stop"), str):
        out["stop"] = [out["stop"]]
    for name in _REALS:
        if isinstance(out.get(name), int) and not isinstance(out[name], bool):
            out[name] = float(out[name])
    out["messages"] = [_message(m) for m in payload.get("messages") or []]
    return out


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    out = {k: v for k, v in message.items() if v is not None}
    content = out.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)
    if isinstance(content, str):
        content = content.strip()
    out["content"] = content
    return out


def digest(*parts: Any) -> str:
    """A short, stable digest of JSON-able ``parts`` (sorted keys, no whitespace)."""
    blob = orjson.dumps(parts, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.blake2b(blob, digest_size=16).hexdigest()


def last_user_text(form: dict[str, Any]) -> str | None:
    """The last message's text when it is a user turn of plain text (what a semantic match compares)."""
    messages = form.get("messages") or []
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "user" and isinstance(last.get("content"), str):
        return str(last["content"])
    return None


def without_last_turn(form: dict[str, Any]) -> dict[str, Any]:
    """The context a semantic match must share exactly: the request with its last turn's text blanked."""
    messages = list(form.get("messages") or [])
    if messages:
        messages[-1] = {**messages[-1], "content": None}
    return {**form, "messages": messages}
