"""Translation between the OpenAI Chat Completions format (the gateway's canonical form) and Anthropic's
Messages API, in all four directions. Pure functions over plain dicts: no I/O, no clock except ``created``.

    OpenAI request   --openai_to_anthropic_request-->   Anthropic request     (worker -> Anthropic provider)
    Anthropic resp.  --anthropic_to_openai_response-->  OpenAI response       (Anthropic provider -> worker)
    Anthropic req.   --anthropic_to_openai_request-->   OpenAI request        (POST /v1/messages inbound)
    OpenAI response  --openai_to_anthropic_response-->  Anthropic response    (POST /v1/messages outbound)

Round trips keep everything both formats can express. What one side cannot say is dropped, not faked:
OpenAI ``response_format``, ``n > 1``, penalties, seed and logprobs have no Anthropic equivalent; Anthropic
``thinking`` blocks, ``top_k``, ``is_error`` on tool results, cache-creation token counts and the
difference between ``end_turn`` and ``stop_sequence`` have no OpenAI equivalent. Anthropic's string and
one-text-block content forms are the same message and may come back in either form.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from shared.errors import InvalidRequest, ProviderError, echo

JSON = dict[str, Any]

_STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_TOOL_CHOICE_TO_ANTHROPIC = {"auto": "auto", "none": "none", "required": "any"}
_TOOL_CHOICE_TO_OPENAI = {"auto": "auto", "none": "none", "any": "required"}


# --------------------------------------------------------------------------- OpenAI -> Anthropic request


def openai_to_anthropic_request(req: JSON, model: str, default_max_tokens: int) -> JSON:
    """An Anthropic Messages request for the OpenAI chat request ``req``, sent as ``model``."""
    if (req.get("n") or 1) != 1:
        raise InvalidRequest("n: Anthropic models return one choice; send n=1 or omit it", param="n")
    system, messages = _split_system(_messages_of(req))
    out: JSON = {
        "model": model,
        "max_tokens": req.get("max_completion_tokens") or req.get("max_tokens") or default_max_tokens,
        "messages": _merge_same_role([_to_anthropic_message(m, i) for i, m in enumerate(messages)]),
    }
    if not out["messages"]:
        raise InvalidRequest("messages: needs at least one user or assistant message", param="messages")
    if system is not None:
        out["system"] = system
    out.update(_anthropic_sampling(req))
    out.update(_anthropic_tools(req))
    return out


def _messages_of(req: JSON) -> list[JSON]:
    messages = req.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty list of chat messages", param="messages")
    return messages


def _split_system(messages: list[JSON]) -> tuple[str | list[JSON] | None, list[JSON]]:
    """Anthropic takes system prompts only at the top level: hoist every system/developer message."""
    texts: list[str] = []
    rest: list[JSON] = []
    for msg in messages:
        if msg.get("role") in ("system", "developer"):
            texts.extend(_texts_of(msg.get("content"), "system"))
        else:
            rest.append(msg)
    if not texts:
        return None, rest
    if len(texts) == 1:
        return texts[0], rest
    return [{"type": "text", "text": t} for t in texts], rest


def _texts_of(content: Any, where: str) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise InvalidRequest(f"{where} messages may only contain text parts")
            texts.append(part.get("text", ""))
        return texts
    raise InvalidRequest(f"{where} message content must be a string or a list of text parts")


def _to_anthropic_message(msg: JSON, index: int) -> JSON:
    role = msg.get("role")
    if role == "user":
        return {"role": "user", "content": _to_anthropic_content(msg.get("content"), index)}
    if role == "assistant":
        return {"role": "assistant", "content": _assistant_blocks(msg, index)}
    if role == "tool":
        return {"role": "user", "content": [_tool_result_block(msg, index)]}
    raise InvalidRequest(
        f"messages[{index}].role: {echo(role)} is not supported; use system, developer, user, assistant or tool",
        param=f"messages[{index}].role",
    )


def _to_anthropic_content(content: Any, index: int) -> str | list[JSON]:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(
            f"messages[{index}].content: must be a string or a list of content parts",
            param=f"messages[{index}].content",
        )
    return [_to_anthropic_part(part, index) for part in content]


def _to_anthropic_part(part: Any, index: int) -> JSON:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
        return {"type": "text", "text": part.get("text", "")}
    if kind == "image_url":
        url = part.get("image_url")
        url = url.get("url") if isinstance(url, dict) else url
        return {"type": "image", "source": _image_source(str(url or ""))}
    raise InvalidRequest(
        f"messages[{index}].content: part type {echo(kind)} cannot be sent to an Anthropic model; "
        "use text or image_url parts",
        param=f"messages[{index}].content",
    )


def _image_source(url: str) -> JSON:
    """``data:`` URLs become inline base64 images, anything else a URL reference."""
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(msg: JSON, index: int) -> str | list[JSON]:
    content = msg.get("content")
    calls = msg.get("tool_calls") or []
    if isinstance(content, str) and not calls:
        return content
    blocks: list[JSON] = []
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif isinstance(content, list):
        blocks.extend({"type": "text", "text": t} for t in _texts_of(content, "assistant") if t)
    for call in calls:
        blocks.append(_tool_use_block(call, index))
    return blocks


def _tool_use_block(call: JSON, index: int) -> JSON:
    function = call.get("function") or {}
    return {
        "type": "tool_use",
        "id": call.get("id"),
        "name": function.get("name"),
        "input": _parse_arguments(function.get("arguments"), index),
    }


def _parse_arguments(arguments: Any, index: int) -> JSON:
    """OpenAI carries tool arguments as a JSON string; Anthropic wants the object itself."""
    if isinstance(arguments, dict):
        return arguments
    if arguments in (None, ""):
        return {}
    try:
        parsed = json.loads(arguments)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(
            f"messages[{index}].tool_calls: function.arguments is not valid JSON ({exc}); "
            "send the arguments as a JSON object encoded as a string",
            param=f"messages[{index}].tool_calls",
        ) from exc
    if not isinstance(parsed, dict):
        raise InvalidRequest(
            f"messages[{index}].tool_calls: function.arguments must encode a JSON object, "
            f"not {type(parsed).__name__}",
            param=f"messages[{index}].tool_calls",
        )
    return parsed


def _tool_result_block(msg: JSON, index: int) -> JSON:
    content = msg.get("content")
    if isinstance(content, list):
        content = [{"type": "text", "text": t} for t in _texts_of(content, "tool")]
    elif not isinstance(content, str):
        content = "" if content is None else json.dumps(content)
    if not msg.get("tool_call_id"):
        raise InvalidRequest(
            f"messages[{index}].tool_call_id: a tool message must name the tool call it answers",
            param=f"messages[{index}].tool_call_id",
        )
    return {"type": "tool_result", "tool_use_id": msg["tool_call_id"], "content": content}


def _merge_same_role(messages: list[JSON]) -> list[JSON]:
    """Anthropic wants user and assistant turns to alternate: fold neighbours of one role together."""
    merged: list[JSON] = []
    for msg in messages:
        if _is_empty_turn(msg):
            continue
        if merged and merged[-1]["role"] == msg["role"]:
            content = _as_blocks(merged[-1]["content"]) + _as_blocks(msg["content"])
            merged[-1] = {"role": msg["role"], "content": content}
        else:
            merged.append(msg)
    return merged


def _is_empty_turn(msg: JSON) -> bool:
    """An assistant turn with neither text nor tool calls (OpenAI allows it, Anthropic does not)."""
    return msg["content"] == [] or (msg["role"] == "assistant" and msg["content"] == "")


def _as_blocks(content: str | list[JSON]) -> list[JSON]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else list(content)


def _anthropic_sampling(req: JSON) -> JSON:
    out: JSON = {}
    if req.get("temperature") is not None:
        out["temperature"] = min(max(float(req["temperature"]), 0.0), 1.0)
    if req.get("top_p") is not None:
        out["top_p"] = req["top_p"]
    stop = req.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if req.get("user"):
        out["metadata"] = {"user_id": str(req["user"])}
    return out


def _anthropic_tools(req: JSON) -> JSON:
    out: JSON = {}
    if req.get("tools"):
        out["tools"] = [_anthropic_tool(t, i) for i, t in enumerate(req["tools"])]
    choice = _anthropic_tool_choice(req.get("tool_choice"))
    if req.get("parallel_tool_calls") is False:
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _anthropic_tool(tool: JSON, index: int) -> JSON:
    if tool.get("type", "function") != "function" or not isinstance(tool.get("function"), dict):
        raise InvalidRequest(
            f"tools[{index}]: only function tools can be sent to an Anthropic model", param=f"tools[{index}]"
        )
    fn = tool["function"]
    out: JSON = {"name": fn.get("name")}
    if fn.get("description"):
        out["description"] = fn["description"]
    out["input_schema"] = fn.get("parameters") or {"type": "object", "properties": {}}
    return out


def _anthropic_tool_choice(choice: Any) -> JSON | None:
    if choice is None:
        return None
    if isinstance(choice, str) and choice in _TOOL_CHOICE_TO_ANTHROPIC:
        return {"type": _TOOL_CHOICE_TO_ANTHROPIC[choice]}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    raise InvalidRequest(
        "tool_choice: use 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
        param="tool_choice",
    )


# --------------------------------------------------------------------------- Anthropic -> OpenAI response


def anthropic_to_openai_response(resp: JSON, model: str) -> JSON:
    """An OpenAI ``chat.completion`` for the Anthropic Messages response ``resp``."""
    texts = [b.get("text", "") for b in resp.get("content") or [] if b.get("type") == "text"]
    calls = [_openai_tool_call(b) for b in resp.get("content") or [] if b.get("type") == "tool_use"]
    message: JSON = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": resp.get("id") or f"msg_{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": _STOP_TO_FINISH.get(resp.get("stop_reason") or "end_turn", "stop"),
        }],
        "usage": _openai_usage(resp.get("usage") or {}),
    }


def as_openai(answer: JSON) -> JSON:
    """A chat answer as an OpenAI ``chat.completion``, whichever of the two forms it is stored in (a job
    answered in the Anthropic dialect keeps the provider's message, ``execution.providers.base``)."""
    if answer.get("type") == "message":
        return anthropic_to_openai_response(answer, str(answer.get("model") or ""))
    return answer


def _openai_tool_call(block: JSON) -> JSON:
    return {
        "id": block.get("id"),
        "type": "function",
        "function": {"name": block.get("name"), "arguments": json.dumps(block.get("input") or {})},
    }


def _openai_usage(usage: JSON) -> JSON:
    """Anthropic's ``input_tokens`` excludes cache reads and writes; OpenAI's ``prompt_tokens`` counts all."""
    cached = int(usage.get("cache_read_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + int(usage.get("cache_creation_input_tokens") or 0)
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


# --------------------------------------------------------------------------- Anthropic -> OpenAI request


def anthropic_to_openai_request(req: JSON) -> JSON:
    """The canonical OpenAI chat request for an inbound Anthropic Messages request."""
    raw_messages = req.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages: must be a non-empty list of messages", param="messages")
    messages = _openai_system(req.get("system"))
    for index, msg in enumerate(raw_messages):
        messages.extend(_to_openai_messages(msg, index))
    out: JSON = {"model": req.get("model"), "messages": messages}
    for key in ("max_tokens", "temperature", "top_p", "stream"):
        if req.get(key) is not None:
            out[key] = req[key]
    if req.get("stop_sequences"):
        out["stop"] = list(req["stop_sequences"])
    user_id = (req.get("metadata") or {}).get("user_id")
    if user_id:
        out["user"] = user_id
    out.update(_openai_tools(req))
    return out


def _openai_system(system: Any) -> list[JSON]:
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    if isinstance(system, list):
        return [{"role": "system", "content": t} for t in _texts_of(system, "system")]
    raise InvalidRequest("system: must be a string or a list of text blocks", param="system")


def _to_openai_messages(msg: JSON, index: int) -> list[JSON]:
    role, content = msg.get("role"), msg.get("content")
    if role not in ("user", "assistant"):
        raise InvalidRequest(
            f"messages[{index}].role: {echo(role)} is not allowed; use user or assistant "
            "(system prompts go in 'system')",
            param=f"messages[{index}].role",
        )
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise InvalidRequest(
            f"messages[{index}].content: must be a string or a list of content blocks",
            param=f"messages[{index}].content",
        )
    if role == "assistant":
        return [_openai_assistant(content, index)]
    return _openai_user(content, index)


def _openai_user(blocks: list[JSON], index: int) -> list[JSON]:
    """Tool results become ``tool`` messages, which OpenAI wants right after the assistant's tool calls."""
    tools = [_openai_tool_message(b, index) for b in blocks if b.get("type") == "tool_result"]
    parts = [_openai_part(b, index) for b in blocks if b.get("type") != "tool_result"]
    return tools + ([{"role": "user", "content": parts}] if parts else [])


def _openai_tool_message(block: JSON, index: int) -> JSON:
    content = block.get("content")
    if isinstance(content, list):
        content = [{"type": "text", "text": t} for t in _texts_of(content, "tool_result")]
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": content or ""}


def _openai_part(block: JSON, index: int) -> JSON:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": block.get("text", "")}
    if kind == "image":
        return {"type": "image_url", "image_url": {"url": _image_url(block.get("source") or {})}}
    raise InvalidRequest(
        f"messages[{index}].content: block type {echo(kind)} is not supported; use text, image, tool_use "
        "or tool_result blocks",
        param=f"messages[{index}].content",
    )


def _image_url(source: JSON) -> str:
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    return str(source.get("url", ""))


def _openai_assistant(blocks: list[JSON], index: int) -> JSON:
    texts, calls = [], []
    for block in blocks:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text", ""))
        elif kind == "tool_use":
            calls.append(_openai_tool_call(block))
        elif kind not in ("thinking", "redacted_thinking"):
            raise InvalidRequest(
                f"messages[{index}].content: block type {echo(kind)} is not allowed in an assistant turn",
                param=f"messages[{index}].content",
            )
    message: JSON = {"role": "assistant", "content": _openai_assistant_content(texts)}
    if calls:
        message["tool_calls"] = calls
    return message


def _openai_assistant_content(texts: list[str]) -> str | list[JSON] | None:
    if not texts:
        return None
    if len(texts) == 1:
        return texts[0]
    return [{"type": "text", "text": t} for t in texts]


def _openai_tools(req: JSON) -> JSON:
    out: JSON = {}
    if req.get("tools"):
        out["tools"] = [_openai_tool(t, i) for i, t in enumerate(req["tools"])]
    choice = req.get("tool_choice")
    if choice:
        out.update(_openai_tool_choice(choice))
    return out


def _openai_tool(tool: JSON, index: int) -> JSON:
    if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
        raise InvalidRequest(
            f"tools[{index}]: only client tools with an input_schema are supported (not server tools)",
            param=f"tools[{index}]",
        )
    fn: JSON = {"name": tool.get("name")}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = tool["input_schema"]
    return {"type": "function", "function": fn}


def _openai_tool_choice(choice: JSON) -> JSON:
    kind = choice.get("type")
    out: JSON = {}
    if kind in _TOOL_CHOICE_TO_OPENAI:
        out["tool_choice"] = _TOOL_CHOICE_TO_OPENAI[kind]
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    else:
        raise InvalidRequest("tool_choice.type: use auto, any, tool or none", param="tool_choice")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


# --------------------------------------------------------------------------- OpenAI -> Anthropic response


def openai_to_anthropic_response(resp: JSON, model: str) -> JSON:
    """An Anthropic Messages response object for the OpenAI ``chat.completion`` ``resp``; an answer an
    Anthropic deployment gave an Anthropic-dialect job is already one, kept whole (thinking blocks and
    their signatures, block order, ``stop_sequence``, the cache usage split), ``model`` as asked."""
    if resp.get("type") == "message":
        return {**resp, "model": model}
    choice = (resp.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    blocks = _response_text_blocks(message)
    blocks.extend(_response_tool_use(call) for call in message.get("tool_calls") or [])
    finish = choice.get("finish_reason") or "stop"
    stop_reason = "refusal" if message.get("refusal") else _FINISH_TO_STOP.get(finish, "end_turn")
    return {
        "id": _anthropic_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": _anthropic_usage(resp.get("usage") or {}),
    }


def _response_text_blocks(message: JSON) -> list[JSON]:
    content = message.get("content")
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
    else:
        texts = [content] if content else []
    if message.get("refusal"):
        texts.append(message["refusal"])
    return [{"type": "text", "text": t} for t in texts if t]


def _response_tool_use(call: JSON) -> JSON:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        parsed = json.loads(arguments)
    except ValueError as exc:
        raise ProviderError(
            f"the provider returned tool call arguments that are not valid JSON: {arguments[:200]!r}"
        ) from exc
    if not isinstance(parsed, dict):
        raise ProviderError(
            f"the provider returned tool call arguments that are not an object: {arguments[:200]!r}"
        )
    return {"type": "tool_use", "id": call.get("id"), "name": function.get("name"), "input": parsed}


def _anthropic_id(openai_id: Any) -> str:
    if isinstance(openai_id, str) and openai_id.startswith("msg_"):
        return openai_id
    if isinstance(openai_id, str) and openai_id:
        return "msg_" + openai_id.removeprefix("chatcmpl-")
    return f"msg_{uuid.uuid4().hex}"


def _anthropic_usage(usage: JSON) -> JSON:
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(int(usage.get("prompt_tokens") or 0) - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }
