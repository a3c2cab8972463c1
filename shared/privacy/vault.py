"""A call's tokenized values, and putting them back into the answer.

The vault maps each placeholder (``[EMAIL_1]``) to the caller's value. It lives only for the call:
in the api's memory while it accepts the job, and in one Redis hash keyed by the job's id
(``Keys.vault``), written in the round trip that accepts the job, read by whichever process runs an
attempt (the api's fast lane has it in memory already; a worker reads it in the round trip that
claims its lease), deleted when the job ends and expiring after the job's deadline if nothing deletes it.
Not in the envelope: the envelope is copied into queues and Celery messages and rebuilt from the SQL
row by recovery, which would lose it; the hash survives a retry or a re-dispatch, and the SQL store
and every queued copy hold only the placeholders.

``restore_text`` puts values back into a whole text; ``StreamRestorer`` into a stream of chunks, where
a placeholder may be split between two chunks (it holds back what could be the start of one).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson

PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]{0,40}_\d{1,6}\]")
LONGEST = 50  # the longest placeholder ``PLACEHOLDER`` matches
_OPEN = re.compile(r"\[(?:[A-Z][A-Z0-9_]{0,47})?")  # what a placeholder's first characters can be


class Vault:
    def __init__(self, values: dict[str, str] | None = None) -> None:
        self.values: dict[str, str] = dict(values or {})

    def __bool__(self) -> bool:
        return bool(self.values)

    def token_for(self, detector: str, value: str, avoid: str = "") -> str:
        """A new placeholder for ``value``: the detector's name and the next number, skipping any that
        the caller's own text already contains (its restoration would be ambiguous)."""
        n = len(self.values) + 1
        while (token := f"[{detector.upper()}_{n}]") in self.values or token in avoid:
            n += 1
        self.values[token] = value
        return token

    def restore_text(self, text: str, escape: Callable[[str], str] | None = None) -> str:
        """``text`` with every placeholder of this vault replaced by its value (``escape``d, for JSON)."""
        if not self.values or "[" not in text:
            return text
        values = self.values
        return PLACEHOLDER.sub(lambda m: _value(values, m.group(), escape), text)

    def restore_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A chat answer with the values back in its text and tool arguments: every choice of an OpenAI
        ``chat.completion``, every block of an Anthropic message (text, thinking, tool input)."""
        if not self.values:
            return body
        if body.get("type") == "message" and isinstance(body.get("content"), list):
            return {**body, "content": [self._block(b) for b in body["content"]]}
        if not isinstance(body.get("choices"), list):
            return body
        return {**body, "choices": [self._choice(c) for c in body["choices"]]}

    def _block(self, block: Any) -> Any:
        if not isinstance(block, dict):
            return block
        if isinstance(block.get("text"), str):
            return {**block, "text": self.restore_text(block["text"])}
        if isinstance(block.get("thinking"), str):  # its signature covers what the provider wrote: as is
            return block
        if "input" in block:
            return {**block, "input": orjson.loads(self.restore_text(orjson.dumps(block["input"]).decode(),
                                                                     escape=json_escape))}
        return block

    def restore_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request as the caller sent it, but for masked values (for a ``full`` audit record)."""
        if not self.values:
            return request
        return orjson.loads(self.restore_text(orjson.dumps(request).decode(), escape=json_escape))

    def _choice(self, choice: Any) -> Any:
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return choice
        message = dict(choice["message"])
        content = message.get("content")
        if isinstance(content, str):
            message["content"] = self.restore_text(content)
        elif isinstance(content, list):
            message["content"] = [{**p, "text": self.restore_text(p["text"])}
                                  if isinstance(p, dict) and isinstance(p.get("text"), str) else p for p in content]
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [self._tool_call(call) for call in message["tool_calls"]]
        return {**choice, "message": message}

    def _tool_call(self, call: Any) -> Any:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
            return call
        arguments = self.restore_text(function["arguments"], escape=json_escape)
        return {**call, "function": {**function, "arguments": arguments}}


def save_in(pipe: Any, key: str, vault: Vault, ttl_s: float) -> None:
    """Queue the vault's write, with its expiry, on a Redis pipeline (``Keys.vault``)."""
    pipe.hset(key, mapping=vault.values)
    pipe.expire(key, max(1, int(ttl_s)))


def _value(values: dict[str, str], token: str, escape: Callable[[str], str] | None) -> str:
    value = values.get(token)
    if value is None:
        return token
    return escape(value) if escape else value


def json_escape(value: str) -> str:
    """``value`` as it must appear inside a JSON string (tool-call arguments are JSON text)."""
    return orjson.dumps(value).decode()[1:-1]


class StreamRestorer:
    """Restores a streamed text chunk by chunk (``feed``), holding back a possible placeholder's start
    until the chunk that completes or rules it out; ``flush`` at the end of the stream."""

    def __init__(self, vault: Vault, escape: Callable[[str], str] | None = None) -> None:
        self.vault = vault
        self.escape = escape
        self._held = ""

    def feed(self, chunk: str) -> str:
        text = self._held + chunk
        cut = _incomplete_from(text)
        self._held = text[cut:]
        return self.vault.restore_text(text[:cut], self.escape)

    def flush(self) -> str:
        text, self._held = self._held, ""
        return self.vault.restore_text(text, self.escape)


def _incomplete_from(text: str) -> int:
    """Where a placeholder that the next chunk could complete begins in ``text`` (``len(text)`` if none)."""
    start = text.rfind("[", max(0, len(text) - LONGEST))
    if start < 0 or "]" in text[start:]:
        return len(text)
    return start if _OPEN.fullmatch(text, start) else len(text)
