"""Checks an answer must pass before a routed job accepts it from a cheaper tier (the cascade).

Each is something the caller would care about, read from the answer alone (OpenAI's ``chat.completion``,
which every adapter hands back):

- ``length``: it was cut at max_tokens (``finish_reason: length``);
- ``json_schema``: the request asked for a JSON schema (``response_format``) and the content is not JSON
  that the schema accepts (validated by ``jsonschema-rs``; compiled schemas are cached);
- ``refusal``: the model refused (a ``refusal`` message, or ``finish_reason: content_filter``);
- ``empty``: no content and no tool call.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import jsonschema_rs
import orjson


def failed_check(request: dict[str, Any], answer: dict[str, Any], checks: Iterable[str]) -> str | None:
    """The first of ``checks`` the answer fails, or None when it passes them all."""
    choices = answer.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    found = choice.get("message")
    message: dict[str, Any] = found if isinstance(found, dict) else {}
    for check in checks:
        if _FAILS[check](request, choice, message):
            return check
    return None


def _cut(request: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]) -> bool:
    return choice.get("finish_reason") == "length"


def _off_schema(request: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]) -> bool:
    schema = requested_schema(request)
    if schema is None or message.get("tool_calls"):
        return False
    content = message.get("content")
    try:
        value = orjson.loads(content) if isinstance(content, str) else None
    except orjson.JSONDecodeError:
        return True
    return value is None or not _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)).is_valid(value)


def _refused(request: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]) -> bool:
    return bool(message.get("refusal")) or choice.get("finish_reason") == "content_filter"


def _empty(request: dict[str, Any], choice: dict[str, Any], message: dict[str, Any]) -> bool:
    content = message.get("content")
    text = content.strip() if isinstance(content, str) else content
    return not text and not message.get("tool_calls")


_FAILS = {"length": _cut, "json_schema": _off_schema, "refusal": _refused, "empty": _empty}


def requested_schema(request: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of ``response_format: {type: json_schema, json_schema: {schema}}``, if any."""
    response_format = request.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return schema if isinstance(schema, dict) else {}


@lru_cache(maxsize=256)
def _validator(schema_json: bytes) -> Any:
    """A compiled validator per schema (callers send the same few schemas again and again); a schema that
    does not compile accepts any JSON, since the caller's mistake is not the answer's."""
    try:
        return jsonschema_rs.validator_for(orjson.loads(schema_json))
    except (ValueError, jsonschema_rs.ValidationError):
        return jsonschema_rs.validator_for({})
