"""How hard a request looks, 0 (trivial) to 1 (hard), from what can be seen without a model: for
``model: auto`` without a task, the score picks the tier a request starts at.

Signals and their weights (summed, capped at 1):

    prompt length      up to 0.35   log-scaled from 50 to 4,000 prompt tokens (long context is hard work)
    code               0.25         code fences, or lines that read as code (def, class, return, {, ;, SELECT ...)
    math               0.2          equations, LaTeX, "prove", "derive", "integral" ...
    multi-step         0.2          numbered or bulleted steps (3 or more), "step by step", "first ... then"
    reasoning words    0.15         "why", "explain", "analyze", "compare", "trade-off", "design" ...
    tools              0.1          the request offers tools
    requested format   0.1          a JSON schema to fill (0.05 for plain JSON mode)

How they were chosen: the signals are the ones routing papers and gateways use as cheap proxies for
difficulty (RouteLLM's and NotDiamond's features without their learned models: length, code, math,
instruction structure, output constraints), weighted by hand so that one strong signal (code, or a long
prompt) lifts a request past the first threshold and two lift it past the second. ``ops/bench_routing.py``
evaluates it on its labelled workload (easy / medium / hard) and prints the confusion matrix of the tier it
picked against the label; the README has the numbers. Only the last user message and the system prompt are
read, at most ``SCAN_CHARS`` of each (its two ends), so the score costs well under a millisecond whatever
the prompt's size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

SCAN_CHARS = 4_000
MATH_EXPR_CHARS = 1_500  # an expression like ``3x + 2 = 7`` is looked for in the first part only

# Each signal is a few substring searches (C speed) on the lower-cased text, no regular expression over
# all of it: an alternation of words run at every position of 4,000 characters costs ~0.5 ms in CPython.
_CODE_MARKS = ("```", "def ", "return ", "function", "#include", "select ", "import ", "{\n", ";\n", "=>", "();")
_MATH_WORDS = ("\\frac", "\\sum", "\\int", "\\sqrt", "prove", "derive", "integral", "derivative", "equation",
               "theorem", "probability", "solve for")
_MATH_EXPR = re.compile(r"\d\s?[-+*/^=]\s?\d")
_REASONING_WORDS = ("why", "explain", "analyze", "analyse", "compare", "trade-off", "tradeoff", "design",
                    "evaluate", "justify", "critique", "plan ")
_STEP_MARKS = tuple(f"\n{i}{end}" for i in range(1, 10) for end in ".)") + ("\n- ", "\n* ", "\n• ")


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float
    signals: tuple[str, ...]  # what raised it, for the route's ``why``


def score(request: dict[str, Any], prompt_tokens: int) -> Complexity:
    """The request's complexity (see the module docstring)."""
    text = _text_of(request).lower()
    found: list[tuple[str, float]] = [("long", _length_weight(prompt_tokens))] if prompt_tokens > 50 else []
    found += [(name, weight) for name, weight, seen in _SIGNALS if seen(text)]
    if request.get("tools"):
        found.append(("tools", 0.1))
    found += _format_signal(request.get("response_format"))
    total = min(1.0, sum(weight for _, weight in found))
    return Complexity(round(total, 3), tuple(name for name, weight in found if weight > 0))


def tier_for(value: float, thresholds: list[float]) -> int:
    """The index of the tier a score starts at: how many thresholds it reaches."""
    return sum(1 for t in thresholds if value >= t)


def _length_weight(tokens: int) -> float:
    return round(0.35 * min(1.0, math.log(tokens / 50) / math.log(80)), 3)


def _code(text: str) -> bool:
    return any(mark in text for mark in _CODE_MARKS)


def _math(text: str) -> bool:
    return any(word in text for word in _MATH_WORDS) or _MATH_EXPR.search(text, 0, MATH_EXPR_CHARS) is not None


def _many_steps(text: str) -> bool:
    steps = sum(text.count(mark) for mark in _STEP_MARKS)
    return steps >= 3 or "step by step" in text or "step-by-step" in text or (
        "first" in text and "then" in text) or "finally" in text


def _reasoning(text: str) -> bool:
    return any(word in text for word in _REASONING_WORDS)


_SIGNALS = (("code", 0.25, _code), ("math", 0.2, _math), ("multi-step", 0.2, _many_steps),
            ("reasoning", 0.15, _reasoning))


def _format_signal(response_format: Any) -> list[tuple[str, float]]:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        return [("json_schema", 0.1)]
    return [("json", 0.05)] if kind == "json_object" else []


def _text_of(request: dict[str, Any]) -> str:
    """The system prompt and the last user message, each cut to ``SCAN_CHARS`` (``_ends``)."""
    messages = request.get("messages") or []
    system = next((m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")), None)
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    return "\n".join(_ends(_content_text(m.get("content"))) for m in (system, user) if m is not None)


def _ends(text: str) -> str:
    """The first and last ``SCAN_CHARS / 2`` characters: instructions come before or after the context."""
    half = SCAN_CHARS // 2
    return text if len(text) <= SCAN_CHARS else f"{text[:half]}\n{text[-half:]}"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
