"""OpenAI <-> Anthropic translation: the tables users rely on, and round trips that keep what both can say."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidRequest, ProviderError
from shared.translate import (
    anthropic_to_openai_request,
    anthropic_to_openai_response,
    openai_to_anthropic_request,
    openai_to_anthropic_response,
)
from tests.providers.conftest import WEATHER_TOOL

TOOL_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}},
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
    {"role": "user", "content": "Which is warmer?"},
]


def to_anthropic(req: dict, **kw) -> dict:
    return openai_to_anthropic_request(req, kw.get("model", "claude-haiku-4-5"), kw.get("default", 1024))


# --------------------------------------------------------------------------- OpenAI -> Anthropic request


def test_system_and_developer_messages_become_top_level_system():
    single = to_anthropic({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]})
    assert single["system"] == "Be brief."
    assert single["messages"] == [{"role": "user", "content": "hi"}]

    several = to_anthropic(
        {
            "messages": [
                {"role": "system", "content": "A"},
                {"role": "user", "content": "hi"},
                {"role": "developer", "content": "B"},
            ]
        }
    )
    assert several["system"] == [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]


def test_tool_conversation_maps_calls_results_and_merges_roles():
    out = to_anthropic({"messages": TOOL_CONVERSATION, "tools": [WEATHER_TOOL], "tool_choice": "auto"})
    assert out["system"] == "You are terse."
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assistant = out["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "Checking."}
    assert assistant[1] == {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    results = out["messages"][2]["content"]
    assert results[:2] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
    ]
    assert results[2] == {"type": "text", "text": "Which is warmer?"}
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather for a city",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
        }
    ]
    assert out["tool_choice"] == {"type": "auto"}


def test_consecutive_user_messages_are_merged_into_one_turn():
    out = to_anthropic({"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_table(choice, expected):
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert out["tool_choice"] == expected


def test_parallel_tool_calls_false_disables_parallel_tool_use():
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], "parallel_tool_calls": False})
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("req", "expected"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
        ({}, 333),
    ],
)
def test_max_tokens_is_always_set(req, expected):
    out = to_anthropic({"messages": [{"role": "user", "content": "x"}], **req}, default=333)
    assert out["max_tokens"] == expected


def test_sampling_stop_user_and_model():
    out = to_anthropic(
        {
            "model": "fast",
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-42",
            "stream": True,
            "seed": 3,
        },
        model="claude-sonnet-4-5",
    )
    assert out["model"] == "claude-sonnet-4-5"
    assert out["temperature"] == 1.0
    assert out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-42"}
    assert "stream" not in out and "seed" not in out


def test_images_become_base64_or_url_sources():
    out = to_anthropic(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0"}},
                        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    ],
                }
            ]
        }
    )
    parts = out["messages"][0]["content"]
    assert parts[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0"}}
    assert parts[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


@pytest.mark.parametrize(
    ("req", "says"),
    [
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}
                        ],
                    },
                ]
            },
            "not valid JSON",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                    }
                ]
            },
            "JSON object",
        ),
        ({"messages": [{"role": "system", "content": "only system"}]}, "at least one user or assistant"),
        ({"messages": []}, "non-empty list"),
        ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n=1"),
        ({"messages": [{"role": "function", "content": "x"}]}, "'function' is not supported"),
        ({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}, "input_audio"),
        ({"messages": [{"role": "tool", "content": "r"}]}, "tool_call_id"),
        ({"messages": [{"role": "user", "content": "x"}], "tool_choice": "sometimes"}, "tool_choice"),
    ],
)
def test_requests_anthropic_cannot_take_are_rejected_with_a_reason(req, says):
    with pytest.raises(InvalidRequest, match=says):
        to_anthropic(req)


# --------------------------------------------------------------------------- Anthropic -> OpenAI response


def anthropic_message(content, stop_reason="end_turn", usage=None) -> dict:
    return {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage or {"input_tokens": 10, "output_tokens": 5},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reason_table(stop_reason, finish):
    out = anthropic_to_openai_response(anthropic_message([{"type": "text", "text": "x"}], stop_reason), "m")
    assert out["choices"][0]["finish_reason"] == finish


def test_text_and_tool_use_become_content_and_tool_calls():
    out = anthropic_to_openai_response(
        anthropic_message(
            [
                {"type": "text", "text": "Let me "},
                {"type": "text", "text": "check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
            "tool_use",
        ),
        "claude-haiku-4-5",
    )
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-haiku-4-5"
    message = out["choices"][0]["message"]
    assert message["content"] == "Let me check."
    call = message["tool_calls"][0]
    assert call["id"] == "toolu_1" and call["type"] == "function"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_tool_only_answer_has_null_content():
    out = anthropic_to_openai_response(
        anthropic_message([{"type": "tool_use", "id": "t", "name": "f", "input": {}}], "tool_use"), "m"
    )
    assert out["choices"][0]["message"]["content"] is None


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens():
    out = anthropic_to_openai_response(
        anthropic_message(
            [],
            usage={
                "input_tokens": 100,
                "output_tokens": 20,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 50,
            },
        ),
        "m",
    )
    assert out["usage"] == {
        "prompt_tokens": 1150,
        "completion_tokens": 20,
        "total_tokens": 1170,
        "prompt_tokens_details": {"cached_tokens": 1000},
    }


# --------------------------------------------------------------------------- Anthropic -> OpenAI request


def test_inbound_anthropic_request_becomes_canonical_openai():
    out = anthropic_to_openai_request(
        {
            "model": "claude-haiku-4-5",
            "max_tokens": 200,
            "system": "Be brief.",
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-1"},
            "temperature": 0.2,
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "s"},
                        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3C"},
                        {"type": "text", "text": "and tomorrow?"},
                    ],
                },
            ],
        }
    )
    assert out["messages"][0] == {"role": "system", "content": "Be brief."}
    assert out["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    assert out["messages"][2]["content"] is None
    assert out["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "-3C"}
    assert out["messages"][4] == {"role": "user", "content": [{"type": "text", "text": "and tomorrow?"}]}
    assert out["stop"] == ["END"] and out["user"] == "u-1" and out["max_tokens"] == 200
    assert out["tool_choice"] == "required"
    assert out["tools"][0]["function"]["parameters"] == {"type": "object"}


@pytest.mark.parametrize(
    ("req", "says"),
    [
        ({"messages": []}, "non-empty"),
        ({"messages": [{"role": "system", "content": "x"}]}, "system prompts go in 'system'"),
        ({"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]}, "document"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "web_search_20250305", "name": "w"}]},
            "server tools",
        ),
    ],
)
def test_inbound_anthropic_requests_we_cannot_express_are_rejected(req, says):
    with pytest.raises(InvalidRequest, match=says):
        anthropic_to_openai_request(req)


# --------------------------------------------------------------------------- OpenAI -> Anthropic response


def openai_completion(message, finish="stop", usage=None) -> dict:
    return {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_table(finish, stop_reason):
    out = openai_to_anthropic_response(openai_completion({"role": "assistant", "content": "x"}, finish), "m")
    assert out["stop_reason"] == stop_reason


def test_openai_response_is_a_valid_anthropic_message():
    out = openai_to_anthropic_response(
        openai_completion(
            {
                "role": "assistant",
                "content": "Sure.",
                "tool_calls": [
                    {"id": "call_9", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                ],
            },
            "tool_calls",
            {
                "prompt_tokens": 100,
                "completion_tokens": 7,
                "total_tokens": 107,
                "prompt_tokens_details": {"cached_tokens": 64},
            },
        ),
        "fast",
    )
    assert out["id"] == "msg_xyz" and out["type"] == "message" and out["role"] == "assistant"
    assert out["model"] == "fast"
    assert out["content"] == [
        {"type": "text", "text": "Sure."},
        {"type": "tool_use", "id": "call_9", "name": "f", "input": {"a": 1}},
    ]
    assert out["usage"]["input_tokens"] == 36 and out["usage"]["cache_read_input_tokens"] == 64
    assert out["usage"]["output_tokens"] == 7


def test_openai_refusal_becomes_anthropic_refusal():
    out = openai_to_anthropic_response(openai_completion({"role": "assistant", "content": None, "refusal": "No."}), "m")
    assert out["stop_reason"] == "refusal"
    assert out["content"] == [{"type": "text", "text": "No."}]


def test_bad_tool_arguments_from_a_provider_are_a_provider_error():
    with pytest.raises(ProviderError, match="not valid JSON"):
        openai_to_anthropic_response(
            openai_completion(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}],
                },
                "tool_calls",
            ),
            "m",
        )


# --------------------------------------------------------------------------- round trips


def normalise_anthropic_request(req: dict) -> dict:
    """Anthropic treats a string and a one-text-block list as the same content; compare as blocks."""
    out = dict(req)
    out["messages"] = [{"role": m["role"], "content": _blocks(m["content"])} for m in req["messages"]]
    if isinstance(out.get("system"), list) and len(out["system"]) == 1:
        out["system"] = out["system"][0]["text"]
    return out


def _blocks(content):
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def test_openai_request_round_trip_through_anthropic_keeps_the_conversation():
    req = {
        "model": "claude-haiku-4-5",
        "messages": TOOL_CONVERSATION,
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "max_tokens": 99,
        "temperature": 0.5,
        "top_p": 0.8,
        "stop": ["X", "Y"],
        "user": "u",
    }
    back = anthropic_to_openai_request(to_anthropic(req))
    assert back["tools"] == req["tools"]
    assert back["tool_choice"] == req["tool_choice"] and back["parallel_tool_calls"] is False
    for key in ("max_tokens", "temperature", "top_p", "stop", "user", "model"):
        assert back[key] == req[key], key
    # The conversation says the same thing: same tool calls, same results, same texts, same order.
    assert back["messages"][:5] == req["messages"][:5]
    assert back["messages"][5] == {"role": "user", "content": [{"type": "text", "text": "Which is warmer?"}]}


def test_anthropic_request_round_trip_through_openai_is_lossless():
    req = {
        "model": "claude-haiku-4-5",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "calling"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"q": [1, 2]}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}]},
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "stop_sequences": ["Z"],
        "metadata": {"user_id": "u"},
        "temperature": 0.3,
        "top_p": 0.5,
    }
    back = to_anthropic(anthropic_to_openai_request(req), default=1)
    assert normalise_anthropic_request(back) == normalise_anthropic_request(req)


def test_response_round_trips():
    anthropic = anthropic_message(
        [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "t", "name": "f", "input": {"x": "y"}},
        ],
        "tool_use",
        {"input_tokens": 40, "output_tokens": 9, "cache_read_input_tokens": 8, "cache_creation_input_tokens": 0},
    )
    again = openai_to_anthropic_response(
        anthropic_to_openai_response(anthropic, "claude-haiku-4-5"), "claude-haiku-4-5"
    )
    assert again == anthropic

    openai = openai_completion(
        {"role": "assistant", "content": "hi"},
        "length",
        {
            "prompt_tokens": 30,
            "completion_tokens": 4,
            "total_tokens": 34,
            "prompt_tokens_details": {"cached_tokens": 10},
        },
    )
    back = anthropic_to_openai_response(openai_to_anthropic_response(openai, "gpt-4o-mini"), "gpt-4o-mini")
    assert back["choices"][0]["message"] == openai["choices"][0]["message"]
    assert back["choices"][0]["finish_reason"] == "length"
    assert back["usage"] == openai["usage"] | {"prompt_tokens_details": {"cached_tokens": 10}}


_text = st.text(min_size=1, max_size=30)
_args = st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=10), max_size=3)
_openai_turn = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, _text),
    st.builds(lambda t: {"role": "assistant", "content": t}, _text),
    st.builds(
        lambda t, a: {
            "role": "assistant",
            "content": t,
            "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "f", "arguments": json.dumps(a)}}],
        },
        _text,
        _args,
    ),
)


@settings(max_examples=150, deadline=None)
@given(turns=st.lists(_openai_turn, min_size=1, max_size=6), system=st.none() | _text)
def test_any_conversation_keeps_its_texts_and_tool_calls(turns, system):
    req = {"messages": ([{"role": "system", "content": system}] if system else []) + turns}
    anthropic = to_anthropic(req)
    roles = [m["role"] for m in anthropic["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), "turns must alternate"
    back = anthropic_to_openai_request(anthropic)
    assert _texts(back["messages"]) == _texts(req["messages"])
    assert _calls(back["messages"]) == _calls(req["messages"])


def _texts(messages):
    out = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            out.append((m["role"], content))
        elif isinstance(content, list):
            out.extend((m["role"], p["text"]) for p in content)
    return out


def _calls(messages):
    return [(c["id"], json.loads(c["function"]["arguments"])) for m in messages for c in m.get("tool_calls") or []]
