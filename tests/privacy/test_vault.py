"""Putting tokenized values back: whole answers, tool arguments (JSON text) and streams cut anywhere."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.privacy.vault import StreamRestorer, Vault

VAULT = Vault({"[EMAIL_1]": "jane@example.com", "[PHONE_2]": "+1 415-555-0132", "[ORDER_REF_3]": 'ORD-"12"'})
TEXT = "Mail [EMAIL_1], call [PHONE_2] about [ORDER_REF_3]; [EMAIL_9] and [EMAIL] are not ours. [EMAIL_1]["


@given(st.lists(st.integers(min_value=0, max_value=len(TEXT)), max_size=12))
def test_a_stream_cut_anywhere_restores_like_the_whole_text(cuts: list[int]) -> None:
    points = sorted({0, len(TEXT), *cuts})
    restorer = StreamRestorer(VAULT)
    out = "".join(restorer.feed(TEXT[a:b]) for a, b in zip(points, points[1:], strict=False)) + restorer.flush()
    assert out == VAULT.restore_text(TEXT)
    assert "jane@example.com" in out and "[EMAIL_9]" in out and "[EMAIL]" in out


def test_tool_arguments_stay_valid_json() -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"ref": "[ORDER_REF_3]"}'}}]}}]}
    arguments = VAULT.restore_body(body)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert orjson.loads(arguments) == {"ref": 'ORD-"12"'}


def test_a_new_placeholder_never_collides_with_the_callers_text() -> None:
    vault = Vault()
    assert vault.token_for("email", "a@b.co", avoid="I wrote [EMAIL_1] myself") == "[EMAIL_2]"
    assert vault.restore_request({"messages": [{"role": "user", "content": "to [EMAIL_2]"}]}) == \
        {"messages": [{"role": "user", "content": "to a@b.co"}]}
