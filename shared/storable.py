"""What the gateway can store and send: every caller's body is checked here before anything is written.

A job's request travels as JSON through orjson (the envelope in Redis), kombu (Celery messages), and
the store (SQLite's JSON text, PostgreSQL's JSONB). Their limits differ, and a value past one of them
was once accepted at the door and then broke a process downstream, again after every restart. So
the request is held to the strictest of them all, at the edge, with a 400 that names the field:

- integers within signed 64 bits (orjson refuses anything wider);
- finite floats (JSON has no NaN or Infinity; JSONB refuses them);
- strings, and object keys, without NUL (JSONB refuses ``\\u0000``) or lone surrogates (not UTF-8);
- nesting at most ``MAX_DEPTH`` deep (orjson stops at 255, and the envelope and the Celery message
  wrap the request a few levels deeper).

Answers from providers are not the caller's to fix: ``storable_copy`` replaces what cannot be stored
(NUL and lone surrogates by U+FFFD, non-finite floats by null) so recording them never fails.
"""

from __future__ import annotations

import math
from typing import Any

from shared.errors import InvalidRequest

MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
_REPLACEMENT = "\ufffd"


def problem_in(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first value that cannot be stored, as (its path, what is wrong with it), or None."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > max_depth:
            return _dotted(path), f"is nested deeper than {max_depth} levels"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str) or (reason := _string_problem(key)):
                    return _dotted(path), "has an object key that " + (reason or "is not a string")
                stack.append((child, (*path, key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, (*path, i)) for i, child in enumerate(item))
        elif reason := _scalar_problem(item):
            return _dotted(path), reason
    return None


def check_storable(value: Any, where: str = "") -> None:
    """Raise a 400 naming the first field that cannot be stored (see the module docstring)."""
    found = problem_in(value)
    if found is None:
        return
    path, reason = found
    param = ".".join(p for p in (where, path) if p) or None
    raise InvalidRequest(f"{param or 'The body'}: {reason}; the gateway cannot store or forward it.",
                         param=param, code="unsupported_value")


def storable_copy(value: Any, depth: int = 0) -> Any:
    """``value`` with what cannot be stored replaced (for provider answers; see the module docstring)."""
    if isinstance(value, str):
        return value if _string_problem(value) is None else _clean_string(value)
    if isinstance(value, dict):
        if depth >= MAX_DEPTH:
            return None
        return {storable_copy(str(k), depth): storable_copy(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return None if depth >= MAX_DEPTH else [storable_copy(v, depth + 1) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
        return str(value)
    return value


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, str):
        return _string_problem(item)
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, int):
        return None if INT_MIN <= item <= INT_MAX else "is an integer outside the signed 64-bit range"
    if isinstance(item, float):
        return None if math.isfinite(item) else "is NaN or Infinity, which JSON cannot carry"
    return f"is a value of type {type(item).__name__}"


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character (\\u0000)"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "contains a lone UTF-16 surrogate, which is not valid Unicode"
    return None


def _clean_string(text: str) -> str:
    return "".join(_REPLACEMENT if ch == "\x00" or "\ud800" <= ch <= "\udfff" else ch for ch in text)


def _dotted(path: tuple[str | int, ...], most: int = 8) -> str:
    """The path as ``a.0.b``; a very deep one shortened to its first parts."""
    shown = ".".join(str(p)[:64] for p in path[:most])
    return shown + ".…" if len(path) > most else shown
