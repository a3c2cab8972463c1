"""Redaction: the request's text as the provider may see it, per the call's ``Policy``.

Every string a provider would read as conversation is scanned: each message's ``content`` (a string
or its parts' ``text``) and the arguments of an assistant's tool calls, whatever the role, the system
prompt included; in Anthropic's form (``shared.dialects``) also the top-level ``system`` and the text
inside a ``tool_result`` block. Per detector:

- ``mask``: the value becomes a typed placeholder, ``[EMAIL]``; it is gone for good.
- ``tokenize``: a numbered placeholder, ``[EMAIL_1]`` (the same value gets the same one within a call);
  the call's ``Vault`` maps it back, so the answer shows the caller's own value.
- ``block``: the call is refused (400 naming the detector and the field); nothing is stored or sent.

The request is copied only where something changed; a call without findings costs the scan alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared.errors import SensitiveDataBlocked
from shared.privacy.detectors import find_all
from shared.privacy.policy import Policy
from shared.privacy.vault import Vault


@dataclass
class Redacted:
    """A request as it may leave: the copy to send, what was replaced (counts per detector), and the
    vault of its tokenized values (empty when nothing was tokenized)."""

    request: dict[str, Any]
    counts: Counter[str] = field(default_factory=Counter)
    vault: Vault = field(default_factory=Vault)


class _Pass:
    """One request's redaction: the policy, the placeholders handed out so far, the counts."""

    def __init__(self, policy: Policy, vault: Vault) -> None:
        self.policy = policy
        self.vault = vault
        self.counts: Counter[str] = Counter()
        self.tokens: dict[tuple[str, str], str] = {}  # (detector, value) -> its placeholder in this call

    def text(self, text: str, where: str) -> str:
        findings = find_all(text, self.policy.finders)
        if not findings:
            return text
        out, last = [], 0
        for f in findings:
            out.append(text[last:f.start])
            out.append(self._placeholder(f.detector, text[f.start:f.end], text, where))
            last = f.end
        out.append(text[last:])
        return "".join(out)

    def _placeholder(self, detector: str, value: str, text: str, where: str) -> str:
        action = self.policy.actions[detector]
        if action == "block":
            raise SensitiveDataBlocked(
                f"{where}: contains a value the '{detector}' detector blocks for this feature; nothing was "
                f"stored or sent. Remove it and send the request again.", param=where, detector=detector)
        self.counts[detector] += 1
        if action == "mask":
            return f"[{detector.upper()}]"
        key = (detector, value)
        if key not in self.tokens:
            self.tokens[key] = self.vault.token_for(detector, value, avoid=text)
        return self.tokens[key]


def redact_request(request: dict[str, Any], policy: Policy) -> Redacted:
    """``request`` with its sensitive values replaced per ``policy`` (see the module docstring)."""
    if not policy.redacts:
        return Redacted(request)
    vault = Vault()
    one = _Pass(policy, vault)
    messages = request.get("messages")
    if not isinstance(messages, list):
        return Redacted(request)
    changed: dict[str, Any] = {}
    new_messages = _each(messages, lambda m, i: _message(one, m, f"messages.{i}"))
    if new_messages is not messages:
        changed["messages"] = new_messages
    system = request.get("system")  # Anthropic's system prompt: a string or text blocks
    if isinstance(system, str):
        changed["system"] = one.text(system, "system")
    elif isinstance(system, list):
        changed["system"] = _each(system, lambda part, i: _part(one, part, f"system.{i}"))
    if all(changed[k] is request.get(k) for k in changed):
        return Redacted(request, one.counts, vault)
    return Redacted({**request, **changed}, one.counts, vault)


def _message(one: _Pass, message: Any, where: str) -> Any:
    if not isinstance(message, dict):
        return message
    changed: dict[str, Any] = {}
    content = message.get("content")
    if isinstance(content, str):
        changed["content"] = one.text(content, f"{where}.content")
    elif isinstance(content, list):
        changed["content"] = _each(content, lambda part, i: _part(one, part, f"{where}.content.{i}"))
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        changed["tool_calls"] = _each(calls, lambda call, i: _tool_call(one, call, f"{where}.tool_calls.{i}"))
    if all(changed[k] is message.get(k) for k in changed):
        return message
    return {**message, **changed}


def _each(items: list[Any], redact: Callable[[Any, int], Any]) -> list[Any]:
    """``items`` redacted one by one: the same list when nothing changed."""
    new = [redact(item, i) for i, item in enumerate(items)]
    return items if all(a is b for a, b in zip(new, items, strict=True)) else new


def _part(one: _Pass, part: Any, where: str) -> Any:
    if isinstance(part, dict) and isinstance(part.get("text"), str):
        text = one.text(part["text"], f"{where}.text")
        return part if text is part["text"] else {**part, "text": text}
    if isinstance(part, dict) and part.get("type") == "tool_result":  # Anthropic: a tool's answer
        inner = part.get("content")
        if isinstance(inner, str):
            new: Any = one.text(inner, f"{where}.content")
        elif isinstance(inner, list):
            new = _each(inner, lambda p, i: _part(one, p, f"{where}.content.{i}"))
        else:
            return part
        return part if new is inner else {**part, "content": new}
    return part


def _tool_call(one: _Pass, call: Any, where: str) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    arguments = one.text(function["arguments"], f"{where}.function.arguments")
    if arguments is function["arguments"]:
        return call
    return {**call, "function": {**function, "arguments": arguments}}
