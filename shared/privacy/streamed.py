"""A call's tokenized values put back into its streamed answer, event by event, in either dialect.

Each text the provider streams (a choice's content, a tool call's arguments, an Anthropic content
block) has its own ``StreamRestorer``, which holds back what could be the start of a placeholder
until the next piece completes or rules it out. What is still held when that text ends (OpenAI: the
choice's ``finish_reason``; Anthropic: ``content_block_stop``) goes out just before its end.
The events are copied where they change, never changed in place (the assembler keeps the originals).
"""

from __future__ import annotations

from typing import Any

from shared.privacy.vault import StreamRestorer, Vault, json_escape
from shared.stream_translate import Event

JSON = dict[str, Any]


class EventRestorer:
    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self.texts: dict[tuple[Any, ...], StreamRestorer] = {}
        self.kinds: dict[int, str] = {}  # Anthropic block index -> the delta type it streams

    def restore(self, event: Event) -> list[Event]:
        """The event with the values back (held back text may make a piece shorter, or empty)."""
        if event.data is None:
            return [event]
        if event.name is None:
            return [Event(None, self._chunk(event.data))]
        return self._anthropic(event.name, event.data)

    def _text(self, key: tuple[Any, ...], escape: bool = False) -> StreamRestorer:
        if key not in self.texts:
            self.texts[key] = StreamRestorer(self.vault, json_escape if escape else None)
        return self.texts[key]

    # -- OpenAI chunks ---------------------------------------------------------------------------

    def _chunk(self, data: JSON) -> JSON:
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            return data
        return {**data, "choices": [self._choice(c) if isinstance(c, dict) else c for c in choices]}

    def _choice(self, choice: JSON) -> JSON:
        at = choice.get("index", 0)
        delta = dict(choice.get("delta") or {})
        if isinstance(delta.get("content"), str):
            delta["content"] = self._text(("c", at)).feed(delta["content"])
        calls = [self._call(at, call) for call in delta.get("tool_calls") or [] if isinstance(call, dict)]
        if choice.get("finish_reason"):
            held = self._text(("c", at)).flush()
            if held:
                delta["content"] = (delta.get("content") or "") + held
            calls += [{"index": key[2], "function": {"arguments": held}} for key, text in self.texts.items()
                      if key[:2] == ("t", at) and (held := text.flush())]
        if calls:
            delta["tool_calls"] = calls
        return {**choice, "delta": delta}

    def _call(self, at: Any, call: JSON) -> JSON:
        function = call.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
            return call
        arguments = self._text(("t", at, call.get("index", 0)), escape=True).feed(function["arguments"])
        return {**call, "function": {**function, "arguments": arguments}}

    # -- Anthropic events ------------------------------------------------------------------------

    def _anthropic(self, name: str, data: JSON) -> list[Event]:
        index = data.get("index", 0)
        if name == "content_block_delta" and isinstance(data.get("delta"), dict):
            delta = data["delta"]
            field = {"text_delta": "text", "input_json_delta": "partial_json"}.get(delta.get("type", ""))
            if field is None or not isinstance(delta.get(field), str):
                return [Event(name, data)]
            self.kinds[index] = delta["type"]
            text = self._text(("b", index), escape=field == "partial_json").feed(delta[field])
            return [Event(name, {**data, "delta": {**delta, field: text}})]
        if name == "content_block_stop" and index in self.kinds:
            held = self._text(("b", index)).flush()
            kind = self.kinds.pop(index)
            if held:
                field = "text" if kind == "text_delta" else "partial_json"
                rest = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: held}}
                return [Event("content_block_delta", rest), Event(name, data)]
        return [Event(name, data)]
