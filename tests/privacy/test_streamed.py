"""Tokenized values put back into a streamed answer event by event (``shared.privacy.streamed``): a
placeholder cut between events is restored whole, before the text it belongs to ends, in both dialects."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.privacy.streamed import EventRestorer
from shared.privacy.vault import Vault
from shared.stream_translate import ChatAssembler, Event, MessagesAssembler
from tests.providers.test_stream_translate import anthropic_events, cut, openai_events

VAULT = Vault({"[EMAIL_1]": "jane@example.com", "[ORDER_REF_2]": 'ORD-"12"'})
TEXT = "Write to [EMAIL_1] about [ORDER_REF_2], not [EMAIL_9]. [EMAIL_1]"
ARGS = '{"to": "[EMAIL_1]", "ref": "[ORDER_REF_2]"}'


def restored(events: list[Event]) -> list[Event]:
    restorer = EventRestorer(VAULT)
    return [out for event in events for out in restorer.restore(event)]


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=10),
       st.lists(st.integers(min_value=0, max_value=len(ARGS)), max_size=6))
def test_openai_chunks_cut_anywhere_are_restored_whole(points: list[int], arg_points: list[int]) -> None:
    events = openai_events(cut(TEXT, points), calls=[("call_1", "send", cut(ARGS, arg_points))], finish="tool_calls")
    whole = ChatAssembler()
    for event in restored(events):
        whole.feed(event)
    message = whole.body()["choices"][0]["message"]
    assert message["content"] == VAULT.restore_text(TEXT)
    assert orjson.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": "jane@example.com",
                                                                               "ref": 'ORD-"12"'}


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=10),
       st.lists(st.integers(min_value=0, max_value=len(ARGS)), max_size=6))
def test_anthropic_events_cut_anywhere_are_restored_before_their_block_stops(points: list[int],
                                                                            arg_points: list[int]) -> None:
    out = restored(anthropic_events(cut(TEXT, points), tool=("toolu_1", "send", cut(ARGS, arg_points))))
    whole = MessagesAssembler()
    for event in out:
        whole.feed(event)
    message = whole.body()
    assert message["content"][1]["text"] == VAULT.restore_text(TEXT)
    assert message["content"][2]["input"] == {"to": "jane@example.com", "ref": 'ORD-"12"'}
    for index in (1, 2):  # nothing of a block after its stop
        stop = next(i for i, e in enumerate(out) if e.name == "content_block_stop" and e.data["index"] == index)
        assert not any(e.name == "content_block_delta" and e.data["index"] == index for e in out[stop:])


def test_the_original_events_are_left_as_they_were() -> None:
    events = openai_events(["[EMAIL_1]"])
    before = orjson.dumps([e.data for e in events])
    restored(events)
    assert orjson.dumps([e.data for e in events]) == before  # the assembler keeps the provider's answer
