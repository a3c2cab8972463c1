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
read, at most ``SCAN_CHARS`` of each, so the score costs tens of microseconds whatever the prompt's size.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

SCAN_CHARS = 4_000

_CODE = re.compile(r"```|^\s*(def |class |import |return\b|function\b|public |#include|SELECT\b|for \(|if \()"
                   r"|[;{}]\s*$", re.M | re.I)
_MATH = re.compile(r"\\(frac|sum|int|sqrt)|\b(prove|derive|integral|derivative|equation|theorem|probability|"
                   r"solve for)\b|\d\s*[-+*/^=]\s*\d", re.I)
_STEPS = re.compile(r"^\s*(\d+[.)]|[-*•])\s+\S", re.M)
_STEP_WORDS = re.compile(r"\bstep[- ]by[- ]step\b|\bfirst\b.{0,200}\bthen\b|\bfinally\b", re.I | re.S)
_REASONING = re.compile(r"\b(why|explain|analy[sz]e|compare|trade-?offs?|design|evaluate|justify|critique|plan)\b",
                        re.I)


@dataclass(frozen=True, slots=True)
class Complexity:
    score: float
    signals: tuple[str, ...]  # what raised it, for the route's ``why``


def score(request: dict[str, Any], prompt_tokens: int) -> Complexity:
    """The request's complexity (see the module docstring)."""
    text = _text_of(request)
    found: list[tuple[str, float]] = [("long", _length_weight(prompt_tokens))] if prompt_tokens > 50 else []
    found += [(name, weight) for name, weight, pattern in _PATTERNS if pattern(text)]
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


def _many_steps(text: str) -> bool:
    return len(_STEPS.findall(text)) >= 3 or _STEP_WORDS.search(text) is not None


_PATTERNS = (
    ("code", 0.25, lambda text: _CODE.search(text) is not None),
    ("math", 0.2, lambda text: _MATH.search(text) is not None),
    ("multi-step", 0.2, _many_steps),
    ("reasoning", 0.15, lambda text: _REASONING.search(text) is not None),
)


def _format_signal(response_format: Any) -> list[tuple[str, float]]:
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "json_schema":
        return [("json_schema", 0.1)]
    return [("json", 0.05)] if kind == "json_object" else []


def _text_of(request: dict[str, Any]) -> str:
    """The system prompt and the last user message, each cut to ``SCAN_CHARS``."""
    messages = request.get("messages") or []
    system = next((m for m in messages if isinstance(m, dict) and m.get("role") in ("system", "developer")), None)
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    return "\n".join(_content_text(m.get("content"))[:SCAN_CHARS] for m in (system, user) if m is not None)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""
