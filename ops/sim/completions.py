"""Deterministic replies: the same request always gets the same text, length and tool call.

The text is built from words that are one token each in cl100k (with and without a leading space,
capitalised or not), so a reply of N tokens is produced without running the tokenizer; the usage
reported is still exactly what ``shared.tokens.count_tokens`` says about the text.
"""

from __future__ import annotations

import math
import random
import zlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from ops.sim.config import OutputConfig
from shared.tokens import count_tokens, tokenizer_name

_WORD_TEXT = (
    "the of and to in is that for it as with was on be by this are from or at an have not but they "
    "which one you all were we can there their been has more if will would about so what up out "
    "when time some them other into than then only its also like new two over these way may first "
    "could any after most work use must made well year back where good through know much should "
    "many people still must long great little world own under last right might place same just "
    "while high every part small large system data model request token limit rate answer simple "
    "result value number order point world start state case group word line fact plan local service "
    "test "
)
_CANDIDATES = _WORD_TEXT.split()


def _one_token_words() -> tuple[str, ...]:
    exact = tokenizer_name() != "approx-bytes/4"
    words = []
    for word in dict.fromkeys(_CANDIDATES):
        forms = (word, " " + word, word.capitalize(), " " + word.capitalize())
        if not exact or all(count_tokens(f) == 1 for f in forms):
            words.append(word)
    return tuple(words)


WORDS = _one_token_words()
_EXACT = tokenizer_name() != "approx-bytes/4"


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text


@dataclass(slots=True)
class Completion:
    text: str
    output_tokens: int
    finish: str  # "stop" | "length" | "tool"
    tool_call: ToolCall | None = None
    refusal: str | None = None


def request_seed(*parts: Any) -> int:
    """A stable seed from the request content (model, system, messages, choice index)."""
    return zlib.crc32(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS))


def sample_length(config: OutputConfig, rng: random.Random, max_tokens: int) -> tuple[int, bool]:
    """Output length from the model's distribution, cut at max_tokens; True when it was cut."""
    if config.dist == "max":
        return max_tokens, True
    if config.dist == "fixed":
        wanted = config.tokens
    elif config.dist == "uniform":
        wanted = rng.randint(config.min, max(config.min, config.max))
    else:
        wanted = round(rng.lognormvariate(math.log(config.median), config.sigma))
        wanted = min(max(wanted, config.min), config.max)
    return (max_tokens, True) if wanted > max_tokens else (max(1, wanted), False)


@lru_cache(maxsize=4096)
def reply_text(seed: int, tokens: int) -> str:
    """Sentences of one-token words ending in '.'; exactly ``tokens`` tokens in cl100k."""
    rng = random.Random(seed)
    pieces: list[str] = []
    sentence = 0
    for i in range(tokens):
        last = i == tokens - 1
        if sentence and (last or (sentence >= 6 and rng.random() < 0.12)):
            pieces.append(".")
            sentence = 0
            continue
        word = rng.choice(WORDS)
        capital = sentence == 0
        pieces.append(("" if i == 0 else " ") + (word.capitalize() if capital else word))
        sentence += 1
    return "".join(pieces)


def complete_text(seed: int, config: OutputConfig, max_tokens: int) -> Completion:
    rng = random.Random(seed)
    tokens, cut = sample_length(config, rng, max_tokens)
    text = reply_text(seed, tokens)
    used = tokens if _EXACT else count_tokens(text)
    return Completion(text, used, "length" if cut else "stop")


def last_user_text(messages: list[dict]) -> str:
    """The text of the last user message (string content, or its text parts/blocks joined)."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _value_for(schema: dict, rng: random.Random) -> Any:
    kind = schema.get("type")
    if "enum" in schema and schema["enum"]:
        return rng.choice(schema["enum"])
    if kind in ("integer", "number"):
        return rng.randint(1, 100)
    if kind == "boolean":
        return True
    if kind == "array":
        return [_value_for(schema.get("items") or {"type": "string"}, rng)]
    if kind == "object":
        return arguments_for(schema, rng)
    return " ".join(rng.choice(WORDS) for _ in range(2))


def arguments_for(schema: dict, rng: random.Random) -> dict:
    """Arguments that satisfy a JSON schema's required properties (all properties if none required)."""
    properties = schema.get("properties") or {}
    names = schema.get("required") or list(properties)
    return {name: _value_for(properties.get(name) or {}, rng) for name in names}


def complete_tool_call(seed: int, name: str, schema: dict | None, call_id: str) -> Completion:
    rng = random.Random(seed)
    arguments = orjson.dumps(arguments_for(schema or {}, rng)).decode()
    tokens = count_tokens(name) + count_tokens(arguments)
    return Completion("", tokens, "tool", ToolCall(call_id, name, arguments))


def complete_json(seed: int, schema: dict, max_tokens: int) -> Completion:
    """A reply that is JSON the schema accepts (``response_format: json_schema``)."""
    rng = random.Random(seed)
    value = arguments_for(schema, rng) if schema.get("type", "object") == "object" else _value_for(schema, rng)
    text = orjson.dumps(value).decode()
    tokens = count_tokens(text)
    if tokens > max_tokens:  # cut like any reply: what is left is not JSON any more
        return Completion(text[: max(1, len(text) * max_tokens // tokens)], max_tokens, "length")
    return Completion(text, tokens, "stop")
