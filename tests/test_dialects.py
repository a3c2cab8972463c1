"""What a deployment receives for a request in each dialect (``shared.dialects``): pure functions, no I/O."""

from __future__ import annotations

import pytest

from shared.cache.canonical import canonical
from shared.dialects import UnsupportedParameter, chat_view, check, provider_body

ASK = [{"role": "user", "content": "hi"}]


def body(request: dict, source: str, target: str, drop: bool = False) -> dict:
    return provider_body(request, source, target, model="served-as", default_max_tokens=99, drop=drop)


def test_same_dialect_is_forwarded_as_written_but_for_model_delivery_and_gateway_tags() -> None:
    request = {"model": "alias", "messages": ASK, "stream": True, "stream_options": {"include_usage": True},
               "metadata": {"feature": "copilot", "priority": "batch", "customer": "c-1"}, "brand_new": [1]}
    assert body(request, "openai", "openai") == {"model": "served-as", "messages": ASK,
                                                 "metadata": {"customer": "c-1"}, "brand_new": [1]}
    only_tags = {"model": "alias", "messages": ASK, "metadata": {"feature": "copilot"}}
    assert "metadata" not in body(only_tags, "openai", "openai")
    anthropic = {"model": "alias", "max_tokens": 5, "messages": ASK, "top_k": 3, "stream": False,
                 "system": [{"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}]}
    expected = {k: v for k, v in anthropic.items() if k != "stream"} | {"model": "served-as"}
    assert body(anthropic, "anthropic", "anthropic") == expected


@pytest.mark.parametrize(("request_", "source", "field"), [
    ({"seed": 1}, "openai", "seed"),
    ({"n": 2}, "openai", "n"),
    ({"response_format": {"type": "json_object"}}, "openai", "response_format"),
    ({"logprobs": True}, "openai", "logprobs"),
    ({"top_k": 4}, "anthropic", "top_k"),
    ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "anthropic", "thinking"),
])
def test_a_field_without_an_equivalent_is_refused_by_name(request_: dict, source: str, field: str) -> None:
    request = {"model": "m", "max_tokens": 5, "messages": ASK, **request_}
    target = "anthropic" if source == "openai" else "openai"
    with pytest.raises(UnsupportedParameter) as err:
        body(request, source, target)
    assert err.value.param == field and err.value.code == "unsupported_parameter"
    assert check(request, source, target) == field
    assert field not in body(request, source, target, drop=True)
    assert check(request, source, target, drop=True) is None


def test_values_with_an_equivalent_are_mapped_and_hints_are_left_out() -> None:
    request = {"model": "m", "messages": [{"role": "system", "content": "sys"}, *ASK], "n": 1, "logprobs": False,
               "response_format": {"type": "text"}, "temperature": 1.7, "user": "u", "store": True,
               "prompt_cache_key": "k"}
    assert body(request, "openai", "anthropic") == {"model": "served-as", "max_tokens": 99, "system": "sys",
                                                    "messages": ASK, "temperature": 1.0,
                                                    "metadata": {"user_id": "u"}}
    cached = {"model": "m", "max_tokens": 5, "cache_control": {"type": "ephemeral"},
              "messages": [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                         "cache_control": {"type": "ephemeral"}}]}]}
    assert body(cached, "anthropic", "openai")["messages"] == [{"role": "user",
                                                                "content": [{"type": "text", "text": "hi"}]}]


def test_twins_read_alike_and_a_field_of_one_dialect_keeps_its_request_apart() -> None:
    anthropic = {"model": "m", "max_tokens": 5, "temperature": 0, "system": "sys", "messages": ASK}
    openai = {"model": "m", "max_tokens": 5, "temperature": 0, "messages": [{"role": "system", "content": "sys"},
                                                                            *ASK]}
    assert canonical(chat_view(anthropic, "anthropic")) == canonical(chat_view(openai, "openai"))
    assert canonical(chat_view({**anthropic, "top_k": 2}, "anthropic")) != canonical(chat_view(openai, "openai"))


def test_a_body_the_translation_cannot_read_still_has_a_view_to_estimate_by() -> None:
    odd = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document",
                                                                                     "source": {"data": "x"}}]}]}
    view = chat_view(odd, "anthropic")
    assert view["max_tokens"] == 5 and view["messages"][0]["role"] == "user"
    assert check(odd, "anthropic", "openai") == "messages[0].content"
