"""Streams across dialects (``shared.stream_translate``): what a caller of either dialect is sent for a
provider's events, and the whole answer rebuilt from them, equal to what the call would have answered
without streaming. Text cut anywhere, tool calls, the stop reason and the usage survive both ways."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.stream_translate import (
    DONE,
    ChatAssembler,
    ChatRelay,
    ChatToMessages,
    Event,
    MessagesAssembler,
    MessagesToChat,
)
from shared.translate import anthropic_to_openai_response, openai_to_anthropic_response

USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}


def openai_events(pieces: list[str], *, calls: tuple[tuple[str, str, list[str]], ...] | list[Any] = (),
                  finish: str = "stop", usage: bool = True) -> list[Event]:
    """A provider's chunks as OpenAI streams them: role, text pieces, each tool call (id and name, then
    its arguments in pieces), the finish reason, the usage chunk, ``[DONE]``."""
    base = {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            **({"usage": None} if usage else {})}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> Event:
        return Event(None, {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})

    events = [chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in pieces]
    for at, (call_id, name, parts) in enumerate(calls):
        events.append(chunk({"tool_calls": [{"index": at, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        events += [chunk({"tool_calls": [{"index": at, "function": {"arguments": p}}]}) for p in parts]
    events.append(chunk({}, finish))
    if usage:
        events.append(Event(None, {**base, "choices": [], "usage": USAGE}))
    return [*events, Event(None, None)]


def anthropic_events(pieces: list[str], *, tool: tuple[str, str, list[str]] | None = None,
                     stop: str = "end_turn") -> list[Event]:
    """A provider's events as Anthropic streams them, a thinking block first (it has no OpenAI form)."""
    def named(name: str, **data: Any) -> Event:
        return Event(name, {"type": name, **data})

    start = {"id": "msg_abc", "type": "message", "role": "assistant", "model": "claude-haiku-4-5", "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 1}}
    events = [named("message_start", message=start),
              named("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
              named("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
              named("content_block_stop", index=0),
              named("content_block_start", index=1, content_block={"type": "text", "text": ""}),
              named("ping")]
    events += [named("content_block_delta", index=1, delta={"type": "text_delta", "text": p}) for p in pieces]
    events.append(named("content_block_stop", index=1))
    if tool is not None:
        tool_id, name, parts = tool
        events.append(named("content_block_start", index=2,
                            content_block={"type": "tool_use", "id": tool_id, "name": name, "input": {}}))
        events += [named("content_block_delta", index=2, delta={"type": "input_json_delta", "partial_json": p})
                   for p in parts]
        events.append(named("content_block_stop", index=2))
    events.append(named("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                        usage={"output_tokens": 7}))
    return [*events, named("message_stop")]


def parse(frames: list[bytes]) -> list[Event]:
    """The caller's side: frames back into events."""
    events = []
    for frame in frames:
        name, data = None, None
        for line in frame.decode().strip().split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = None if line[6:] == "[DONE]" else orjson.loads(line[6:])
        events.append(Event(name, data))
    return events


def relay(translator: Any, events: list[Event]) -> list[bytes]:
    frames = [frame for event in events for frame in translator.feed(event)]
    return frames + translator.close()


def assembled(assembler: Any, events: list[Event]) -> dict[str, Any]:
    for event in events:
        assembler.feed(event)
    return assembler.body()  # type: ignore[no-any-return]


def cut(text: str, points: list[int]) -> list[str]:
    edges = sorted({0, len(text), *[p % (len(text) + 1) for p in points]})
    return [text[a:b] for a, b in zip(edges, edges[1:], strict=False) if b > a]


TEXT = "Streams arrive in pieces, naïvely cut — even mid-word."
ARGS = '{"city": "Paris", "unit": "celsius"}'


def test_the_same_dialect_relays_each_chunk_and_the_usage_only_when_asked() -> None:
    events = openai_events(["Hel", "lo"])
    asked = parse(relay(ChatRelay(include_usage=True), events))
    assert [e.data for e in asked] == [e.data for e in events]  # verbatim, the usage chunk included
    plain = parse(relay(ChatRelay(include_usage=False), openai_events(["Hel", "lo"])))
    assert all(e.data is None or "usage" not in e.data for e in plain)
    assert len(plain) == len(events) - 1 and plain[-1].data is None  # only the usage chunk left out; one [DONE]


def test_the_relay_ends_a_stream_that_lacked_its_done() -> None:
    frames = relay(ChatRelay(include_usage=False), openai_events(["x"])[:-1])
    assert frames[-1] == DONE and frames.count(DONE) == 1


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=8))
def test_openai_chunks_to_an_anthropic_caller_rebuild_the_same_message(points: list[int]) -> None:
    events = openai_events(cut(TEXT, points))
    whole = ChatAssembler()
    for event in events:
        whole.feed(event)
    frames = relay(ChatToMessages(prompt_tokens=12), events)
    got = assembled(MessagesAssembler(), parse(frames))
    expected = openai_to_anthropic_response(whole.body(), "gpt-4o-mini")
    assert got["content"] == expected["content"] == [{"type": "text", "text": TEXT}]
    assert got["stop_reason"] == "end_turn"
    assert got["usage"] == {"input_tokens": 12, "output_tokens": 7}
    assert [e.name for e in parse(frames)][-2:] == ["message_delta", "message_stop"]


def test_openai_tool_calls_become_tool_use_blocks_with_their_input() -> None:
    events = openai_events(["Let me check."], calls=[("call_1", "get_weather", ['{"city": ', '"Paris"}']),
                                                     ("call_2", "get_time", ["{}"])], finish="tool_calls")
    got = assembled(MessagesAssembler(), parse(relay(ChatToMessages(), events)))
    assert got["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}]
    assert got["stop_reason"] == "tool_use"


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=8),
       st.lists(st.integers(min_value=0, max_value=len(ARGS)), max_size=5))
def test_anthropic_events_to_an_openai_caller_rebuild_the_same_completion(points: list[int],
                                                                          arg_points: list[int]) -> None:
    events = anthropic_events(cut(TEXT, points), tool=("toolu_1", "get_weather", cut(ARGS, arg_points)),
                              stop="tool_use")
    frames = relay(MessagesToChat(include_usage=True), events)
    got = assembled(ChatAssembler(), parse(frames))
    expected = anthropic_to_openai_response(assembled(MessagesAssembler(), events), "claude-haiku-4-5")
    message = got["choices"][0]["message"]
    assert message["content"] == expected["choices"][0]["message"]["content"] == TEXT  # the thinking left out
    assert message["tool_calls"] == [{"id": "toolu_1", "type": "function",
                                      "function": {"name": "get_weather", "arguments": ARGS}}]
    assert got["choices"][0]["finish_reason"] == "tool_calls"
    assert got["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert frames.count(DONE) == 1 and frames[-1] == DONE


def test_an_openai_caller_that_did_not_ask_gets_no_usage_from_an_anthropic_stream() -> None:
    frames = relay(MessagesToChat(include_usage=False), anthropic_events(["Hi"]))
    assert all(e.data is None or "usage" not in e.data for e in parse(frames))
    assert frames.count(DONE) == 1


def test_the_anthropic_assembler_keeps_what_only_anthropic_says() -> None:
    message = assembled(MessagesAssembler(), anthropic_events(["Hi"], stop="max_tokens"))
    assert message["content"][0] == {"type": "thinking", "thinking": "hmm"}
    assert message["content"][1] == {"type": "text", "text": "Hi"}
    assert message["stop_reason"] == "max_tokens" and message["usage"] == {"input_tokens": 12, "output_tokens": 7}
