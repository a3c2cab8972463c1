"""Prompt-injection screening of the content a caller does not vouch for: user turns and tool results.

The system prompt is the product's own and is not screened; nor are assistant turns. Each screened
text is normalised (NFKC, case folded, zero-width characters dropped, whitespace collapsed) and held
to rules, each a signal with a weight: an instruction to drop the instructions, a new persona, a
request for the system prompt, a fake role marker, a hidden instruction addressed to the model in
retrieved content, an exfiltration link. A text's score is ``1 - prod(1 - weight)`` over the signals
it raises, so one strong signal or several weak ones cross the threshold; the call's score is its
worst text's. Rules only: no model that runs offline here was worth its cost on the request path
(see README, "Redaction, screening and the audit log").
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from shared.config import ScreenMode
from shared.errors import InjectionBlocked

Verdict = Literal["clean", "flagged", "blocked"]
SCREENED_ROLES = ("user", "tool", "function")
_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"))
_WS = re.compile(r"\s+")

# (signal, weight, pattern over the normalised text)
_RULES: tuple[tuple[str, float, str], ...] = (
    ("ignore_instructions", 0.7,
     r"\b(?:ignore|disregard|forget|override|bypass|skip|drop|abandon|neglect)\s(?:\w+\s){0,3}?(?:previous|prior|above|"
     r"earlier|preceding|initial|original|system|all|your|developer'?s?)\s(?:\w+\s){0,3}?(?:instructions?|prompts?|"
     r"rules|directions|directives|guidelines|guardrails|constraints|polic(?:y|ies)|restrictions|programming)\b"),
    ("new_instructions", 0.45,
     r"\b(?:new|updated|revised|real|actual|true|secret|hidden|additional)\s(?:system\s)?(?:instructions?|"
     r"directives?|orders|task|objective|rules)\s?(?::|follow|are|is)|\bfrom now on\b|"
     r"\binstead,? (?:you (?:must|should|will)|do)\b"),
    ("persona_override", 0.5,
     r"\byou are (?:now )?(?:an? |in )?(?:dan|unrestricted|unfiltered|uncensored|jailbroken|evil|free of)\b|"
     r"\byou are no longer\b|\b(?:act|behave|respond) as (?:if you (?:are|were) )?(?:an? )?(?:unrestricted|"
     r"unfiltered|uncensored|jailbroken|evil|different)|\bpretend (?:to be|you are)\b.{0,40}\b(?:no|without) "
     r"(?:any )?(?:rules|restrictions|limits|filters)|\b(?:you are|you're|enter|activate|enable|now in) "
     r"(?:now )?(?:in )?(?:developer|dan|god|jailbreak) mode\b|\bdo anything now\b|\bjailbroken\b"),
    ("system_prompt_leak", 0.6,
     r"\b(?:reveal|show|print|repeat|output|display|tell me|give me|leak|dump|disclose|recite)\s(?:\w+\s){0,3}?"
     r"(?:system|initial|hidden|original|secret|developer|confidential)\s(?:prompt|instructions?|message|rules)\b|"
     r"\bwhat (?:is|are|was|were) (?:your|the assistant'?s) (?:\w+\s)?(?:system |initial |hidden |original )?"
     r"(?:prompt|instructions)\b|\brepeat (?:everything|all|the text|the words) (?:above|before)\b"),
    ("role_marker", 0.45,
     r"(?:^|\s)(?:system|assistant|developer)\s?:\s|<\|?(?:im_start|im_end|system|endoftext)\|?>|\[/?inst\]|"
     r"</?(?:system|instructions?|sys)>|#{2,}\s?(?:system|instruction|new instructions)\b|<<sys>>"),
    ("addressed_to_model", 0.45,
     r"\b(?:ai|assistant|chatbot|language model|llm|gpt|claude|model|agent)s?[,:]?\s(?:\w+\s){0,2}?(?:you must|"
     r"must now|should now|please ignore|are instructed|are required|will now|do not (?:tell|inform|mention|reveal))|"
     r"\bnote to (?:the )?(?:ai|assistant|model|llm|agent)\b|\b(?:important|attention|urgent) (?:instructions? )?"
     r"(?:for|to) (?:the )?(?:ai|assistant|model|llm|agent)\b"),
    ("conceal_from_user", 0.5,
     r"\b(?:do not|don't|never|without) (?:tell(?:ing)?|inform(?:ing)?|mention(?:ing)?|alert(?:ing)?|let(?:ting)?|"
     r"show(?:ing)?) (?:the )?(?:user|human|customer|them)\b|\b(?:secretly|silently|covertly)\s(?:\w+\s){0,2}?"
     r"(?:send|forward|include|add|call|email|transfer|exfiltrate)"),
    ("exfiltration", 0.5,
     r"!\[[^\]]{0,100}\]\(https?://[^)\s]{1,300}[?&][\w-]{1,40}=|\b(?:send|forward|email|post|upload|transfer|"
     r"exfiltrate|leak)\s(?:\w+\s){0,6}?(?:to|at)\s(?:https?://|[\w.+-]{1,64}@[\w-]{1,63}\.)|\bcall (?:the )?"
     r"(?:tool|function) \w+ with\b.{0,80}\b(?:password|api key|credentials|token|secret)"),
    ("encoded_payload", 0.5,
     r"\b(?:decode|base64|rot13|hex)(?:-decode)?\s(?:\w+\s){0,4}?(?:and|then)\s(?:follow|execute|run|obey|do)\b"),
    ("override_safety", 0.5,
     r"\b(?:no|without|disable|turn off|remove|ignore|bypass|circumvent|evade)\s(?:\w+\s){0,2}?"
     r"(?:ethical|safety|content) (?:guidelines|filters?|restrictions|policy|policies|rules)\b"),
)
RULES = tuple((name, weight, re.compile(pattern)) for name, weight, pattern in _RULES)
# Words each rule cannot match without: a substring test (C speed) skips a rule's regex on most texts.
TRIGGERS: dict[str, tuple[str, ...]] = {
    "ignore_instructions": ("ignor", "disregard", "forget", "overrid", "bypass", "skip", "drop", "abandon", "neglect"),
    "new_instructions": ("new ", "updated", "revised", "real ", "actual", "true ", "secret", "hidden", "additional",
                         "from now on", "instead"),
    "persona_override": ("you are", "act as", "behave as", "respond as", "pretend", " mode", "do anything",
                         "jailbr"),
    "system_prompt_leak": ("prompt", "instruction", "repeat", "message", "rules"),
    "role_marker": ("system", "assistant", "developer", "<|", "inst]", "<<sys", "##", "<sys", "</sys", "instr"),
    "addressed_to_model": ("ai", "assistant", "chatbot", "model", "llm", "gpt", "claude", "agent"),
    "conceal_from_user": ("tell", "inform", "mention", "alert", "let", "show", "secretly", "silently", "covertly"),
    "exfiltration": ("http", "send", "forward", "email", "post", "upload", "transfer", "exfiltrat", "leak", "call "),
    "encoded_payload": ("decode", "base64", "rot13", "hex"),
    "override_safety": ("ethical", "safety", "content "),
}


@dataclass(frozen=True)
class Screened:
    """The call's verdict: ``clean``, ``flagged`` or ``blocked``, its score, the signals raised and where."""

    verdict: Verdict
    score: float
    signals: tuple[str, ...] = ()
    where: str | None = None

    def summary(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "score": round(self.score, 3), "signals": list(self.signals)}

    def header(self) -> str:
        """``x-gateway-screen``: the verdict, score and signals of a flagged call."""
        return f"{self.verdict}; score={self.score:.2f}; signals={','.join(self.signals)}"


CLEAN = Screened("clean", 0.0)


def normalise(text: str) -> str:
    """What the rules read: compatibility forms folded (fullwidth, ligatures), invisible characters dropped."""
    text = unicodedata.normalize("NFKC", text) if not text.isascii() else text
    return _WS.sub(" ", text.translate(_ZERO_WIDTH).casefold())


def score_text(text: str) -> tuple[float, tuple[str, ...]]:
    """The text's injection score and the signals it raised."""
    norm = normalise(text)
    signals = tuple(name for name, _, pattern in RULES
                    if any(word in norm for word in TRIGGERS[name]) and pattern.search(norm))
    keep = 1.0
    for name, weight, _ in RULES:
        if name in signals:
            keep *= 1.0 - weight
    return 1.0 - keep, signals


def screened_texts(request: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, text) for every user and tool text of the request (the system prompt is not screened)."""
    for i, message in enumerate(request.get("messages") or ()):
        if not isinstance(message, dict) or message.get("role") not in SCREENED_ROLES:
            continue
        content = message.get("content")
        if isinstance(content, str):
            yield f"messages.{i}.content", content
        elif isinstance(content, list):
            yield from _part_texts(content, f"messages.{i}.content")


def _part_texts(parts: list[Any], where: str) -> Iterator[tuple[str, str]]:
    """The text parts, and the text inside Anthropic ``tool_result`` blocks (a tool's answer)."""
    for k, part in enumerate(parts):
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            yield f"{where}.{k}.text", part["text"]
        elif part.get("type") == "tool_result":
            inner = part.get("content")
            if isinstance(inner, str):
                yield f"{where}.{k}.content", inner
            elif isinstance(inner, list):
                yield from _part_texts(inner, f"{where}.{k}.content")


def screen_request(request: dict[str, Any], mode: ScreenMode, threshold: float) -> Screened:
    """The call's verdict under ``mode``; a ``block`` over the threshold raises ``InjectionBlocked``."""
    if mode == "off":
        return CLEAN
    worst, signals, where = 0.0, set[str](), None
    for path, text in screened_texts(request):
        score, raised = score_text(text)
        signals.update(raised)
        if score > worst:
            worst, where = score, path
    if worst < threshold:
        return Screened("clean", worst, tuple(sorted(signals)))
    found = Screened("blocked" if mode == "block" else "flagged", worst, tuple(sorted(signals)), where)
    if mode == "block":
        raise InjectionBlocked(f"{where}: the request was refused as a likely prompt injection (score "
                               f"{worst:.2f}; signals: {', '.join(found.signals)}); nothing was stored or sent.",
                               param=where)
    return found
