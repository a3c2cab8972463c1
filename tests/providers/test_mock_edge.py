"""Adapters at a mocked HTTP edge, for what the simulator cannot produce: exact headers and odd bodies."""

from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

from execution.providers import OpenAIAdapter, ProviderCallError, retry_after_s
from execution.providers.openai_adapter import AZURE_API_VERSION
from shared.config import Timeouts
from shared.errors import InvalidRequest
from tests.providers.conftest import CHAT, make_deployment, make_provider

OPENAI_OK = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 11,
        "completion_tokens": 2,
        "total_tokens": 13,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}
ANTHROPIC_OK = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 9, "output_tokens": 2},
}


def capture(status: int, body: object, headers: dict | None = None, seen: list | None = None):
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return handler


# --------------------------------------------------------------------------- what is sent


def test_openai_sends_the_deployment_model_auth_and_extra_headers(mock_adapter, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test")
    seen: list[httpx.Request] = []
    adapter = mock_adapter(
        "openai",
        capture(200, OPENAI_OK, {"X-RateLimit-Remaining-Requests": "99"}, seen),
        api_key_env="TEST_OPENAI_KEY",
        headers={"OpenAI-Organization": "org-1"},
    )
    result = adapter.call({**CHAT, "stream": True, "metadata": {"feature": "x"}, "prompt_cache_key": "k1"})

    request = seen[0]
    assert str(request.url) == "https://api.example.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["openai-organization"] == "org-1"
    sent = json.loads(request.content)
    assert sent["model"] == "gpt-4o-mini"
    assert not {"stream", "metadata"} & set(sent)  # the gateway's: its delivery and its tags
    assert sent["prompt_cache_key"] == "k1"  # the provider's, even one the gateway does not know
    assert result.body == OPENAI_OK
    assert result.status == 200 and result.deployment == "gpt-4o-mini@test"
    assert result.headers["x-ratelimit-remaining-requests"] == "99"
    assert (result.usage.input_tokens, result.usage.output_tokens, result.usage.cached_input_tokens) == (11, 2, 4)
    assert result.latency_ms >= 0


@pytest.mark.parametrize(
    ("base_url", "url", "params"),
    [
        (
            "https://acme.openai.azure.com/openai/deployments/gpt4o",
            "https://acme.openai.azure.com/openai/deployments/gpt4o/chat/completions",
            {"api-version": AZURE_API_VERSION},
        ),
        ("https://acme.openai.azure.com/openai/v1", "https://acme.openai.azure.com/openai/v1/chat/completions", {}),
        (
            "http://127.0.0.1:8001/deployments/llama/",
            "http://127.0.0.1:8001/deployments/llama/chat/completions",
            {"api-version": AZURE_API_VERSION},
        ),
    ],
)
def test_azure_style_base_urls_use_api_key_and_api_version(mock_adapter, monkeypatch, base_url, url, params):
    monkeypatch.setenv("AZ_KEY", "az-secret")
    seen: list[httpx.Request] = []
    mock_adapter("openai", capture(200, OPENAI_OK, seen=seen), base_url=base_url, api_key_env="AZ_KEY").call(CHAT)
    request = seen[0]
    assert str(request.url.copy_with(query=None)) == url
    assert dict(request.url.params) == params
    assert request.headers["api-key"] == "az-secret" and "authorization" not in request.headers


def test_azure_api_version_from_config_wins(mock_adapter):
    seen: list[httpx.Request] = []
    mock_adapter(
        "openai",
        capture(200, OPENAI_OK, seen=seen),
        base_url="https://x.openai.azure.com/openai/deployments/d",
        api_version="2025-01-01-preview",
    ).call(CHAT)
    assert seen[0].url.params["api-version"] == "2025-01-01-preview"


def test_anthropic_sends_messages_api_and_answers_in_openai_format(mock_adapter, monkeypatch):
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant")
    seen: list[httpx.Request] = []
    adapter = mock_adapter(
        "anthropic", capture(200, ANTHROPIC_OK, seen=seen), model="claude-haiku-4-5", api_key_env="TEST_ANTHROPIC_KEY"
    )
    result = adapter.call({**CHAT, "messages": [{"role": "system", "content": "Be nice."}, *CHAT["messages"]]})

    request = seen[0]
    assert str(request.url) == "https://api.example.test/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant"
    assert request.headers["anthropic-version"] == "2023-06-01"
    sent = json.loads(request.content)
    assert sent["model"] == "claude-haiku-4-5" and sent["system"] == "Be nice." and sent["max_tokens"] == 20
    assert result.body["object"] == "chat.completion"
    assert result.body["choices"][0]["message"]["content"] == "Hello!"
    assert result.usage.input_tokens == 9 and result.usage.output_tokens == 2


def test_a_request_anthropic_cannot_take_is_rejected_before_sending(mock_adapter):
    seen: list[httpx.Request] = []
    adapter = mock_adapter("anthropic", capture(200, ANTHROPIC_OK, seen=seen))
    with pytest.raises(InvalidRequest, match="^n: an anthropic model cannot"):
        adapter.call({**CHAT, "n": 3})
    assert seen == []


# --------------------------------------------------------------------------- how failures are classified

OPENAI_ERR = {"error": {"message": "boom", "type": "server_error", "code": None}}


def anthropic_err(kind: str, message: str, **extra: object) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message, **extra}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retryable"),
    [
        (400, {"error": {"message": "bad 'messages'", "type": "invalid_request_error"}}, {}, "bad_request", False),
        (
            400,
            {"error": {"message": "flagged", "type": "invalid_request_error", "code": "content_policy_violation"}},
            {},
            "refusal",
            False,
        ),
        (401, {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}, {}, "auth", False),
        (403, anthropic_err("permission_error", "no access"), {}, "auth", False),
        (404, {"error": {"message": "model not found", "code": "model_not_found"}}, {}, "not_found", False),
        (429, {"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}}, {}, "rate_limit", True),
        (
            429,
            {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota"}},
            {},
            "rate_limit",
            False,
        ),
        (
            429,
            anthropic_err(
                "rate_limit_error",
                "Spend limit reached for this month",
                details={"error_code": "enforced_spend_limit_reached"},
            ),
            {},
            "rate_limit",
            False,
        ),
        (
            429,
            anthropic_err("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
            {},
            "rate_limit",
            True,
        ),
        (500, OPENAI_ERR, {}, "server", True),
        (502, b"<html>Bad Gateway</html>", {}, "server", True),
        (503, OPENAI_ERR, {}, "overloaded", True),
        (504, b"", {}, "server", True),
        (529, anthropic_err("overloaded_error", "Overloaded"), {}, "overloaded", True),
        (500, OPENAI_ERR, {"x-should-retry": "false"}, "server", False),
        (400, OPENAI_ERR, {"x-should-retry": "true"}, "bad_request", True),
    ],
)
def test_error_statuses_are_classified(mock_adapter, status, body, headers, kind, retryable):
    with pytest.raises(ProviderCallError) as caught:
        mock_adapter("openai", capture(status, body, headers)).call(CHAT)
    err = caught.value
    assert (err.kind, err.upstream_status, err.retryable) == (kind, status, retryable)
    assert err.deployment == "gpt-4o-mini@test"
    assert f"HTTP {status}" in err.message and "gpt-4o-mini@test" in err.message
    if isinstance(body, dict):
        assert err.body == body
        assert body["error"]["message"] in err.message


def test_anthropic_spend_limit_429_is_not_retried(mock_adapter):
    body = anthropic_err("rate_limit_error", "Your organization has reached its monthly spend limit.")
    with pytest.raises(ProviderCallError) as caught:
        mock_adapter("anthropic", capture(429, body)).call(CHAT)
    assert caught.value.kind == "rate_limit" and caught.value.retryable is False
    assert "spend limit" in caught.value.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "0.25"}, 0.25),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_headers(mock_adapter, headers, expected):
    with pytest.raises(ProviderCallError) as caught:
        mock_adapter("openai", capture(429, OPENAI_ERR, headers)).call(CHAT)
    assert caught.value.retry_after_s == expected
    assert caught.value.headers.get("retry-after") == headers.get("retry-after")


def test_retry_after_http_date():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_s({"retry-after": date}, now=now) == pytest.approx(30.0)
    assert retry_after_s({"retry-after": email.utils.formatdate(now - 30, usegmt=True)}, now=now) == 0.0


@pytest.mark.parametrize(
    ("kind", "status", "body"),
    [
        ("openai", 200, b"{not json"),
        ("openai", 200, {"id": "x", "choices": []}),
        ("openai", 200, [1, 2]),
        ("openai", 201, {"choices": [{"index": 0}]}),
        ("anthropic", 200, {"id": "msg", "type": "message"}),
        ("anthropic", 200, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ("anthropic", 200, b""),
    ],
)
def test_unusable_success_bodies_are_malformed_and_retryable(mock_adapter, kind, status, body):
    with pytest.raises(ProviderCallError) as caught:
        mock_adapter(kind, capture(status, body)).call(CHAT)
    assert caught.value.kind == "malformed" and caught.value.retryable is True
    assert caught.value.upstream_status == status


def raising(exc: Exception):
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("exc", "kind", "retryable"),
    [
        (httpx.ConnectError("connection refused"), "connection", True),
        (httpx.RemoteProtocolError("peer closed connection"), "connection", True),
        (httpx.ReadError("reset by peer"), "connection", True),
        (httpx.ReadTimeout("read timed out"), "timeout", True),
        (httpx.ConnectTimeout("connect timed out"), "timeout", True),
        (httpx.PoolTimeout("no free connection"), "timeout", True),
        (httpx.UnsupportedProtocol("ftp://"), "connection", False),
    ],
)
def test_transport_failures_are_mapped_at_one_boundary(mock_adapter, exc, kind, retryable):
    with pytest.raises(ProviderCallError) as caught:
        mock_adapter("openai", raising(exc)).call(CHAT)
    assert (caught.value.kind, caught.value.retryable, caught.value.upstream_status) == (kind, retryable, None)
    assert caught.value.__cause__ is exc


def test_total_timeout_ends_a_trickling_response():
    def trickle():
        for _ in range(1000):
            time.sleep(0.01)
            yield b" "

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=trickle())

    client = httpx.Client(transport=httpx.MockTransport(handler))
    deployment = make_deployment("gpt-4o-mini", timeouts=Timeouts(connect=1, read=5, total=0.1))
    adapter = OpenAIAdapter(deployment, make_provider("openai", "https://api.example.test/v1"), client=client)
    with pytest.raises(ProviderCallError) as caught:
        adapter.call(CHAT)
    client.close()
    assert caught.value.kind == "timeout" and caught.value.retryable
    assert "total timeout of 0.1s" in caught.value.message


# --------------------------------------------------------------------------- a streamed answer's edges


def _chunk(delta: dict, finish: str | None = None) -> bytes:
    body = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


SSE = {"content-type": "text/event-stream"}


def test_a_stream_that_ends_before_its_last_event_is_not_taken_for_a_whole_answer(mock_adapter):
    from execution.providers.streaming import open_stream

    whole = _chunk({"content": "Hel"}) + _chunk({"content": "lo"}, "stop") + b"data: [DONE]\n\n"
    adapter = mock_adapter("openai", capture(200, whole, SSE))
    with open_stream(adapter, CHAT) as call:
        assert len(list(call.events())) == 3
        assert call.result().body["choices"][0]["message"]["content"] == "Hello"
    cut_short = mock_adapter("openai", capture(200, _chunk({"content": "Hel"}), SSE))
    with pytest.raises(ProviderCallError) as err, open_stream(cut_short, CHAT) as call:
        list(call.events())
        call.result()
    assert err.value.kind == "malformed" and "last event" in str(err.value)


def test_a_stream_request_asks_for_the_usage_and_an_error_status_is_raised_before_any_event(mock_adapter):
    from execution.providers.streaming import open_stream

    seen: list[httpx.Request] = []
    adapter = mock_adapter("openai", capture(429, {"error": {"message": "slow down"}}, {"retry-after": "2"}, seen))
    with pytest.raises(ProviderCallError) as err, open_stream(adapter, CHAT):
        pass
    assert err.value.kind == "rate_limit" and err.value.retry_after_s == 2
    sent = json.loads(seen[0].content)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    not_a_stream = mock_adapter("openai", capture(200, OPENAI_OK))
    with pytest.raises(ProviderCallError) as err, open_stream(not_a_stream, CHAT):
        pass
    assert err.value.kind == "malformed"
