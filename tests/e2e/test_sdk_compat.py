"""The official OpenAI and Anthropic SDKs work against the gateway with only base_url and key changed."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import Stack


def _openai(stack: Stack, tenant: str = "acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys[tenant], max_retries=0)


def test_openai_sync_client_gets_a_completion_with_gateway_headers(stack: Stack) -> None:
    raw = _openai(stack).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Say hello"}], max_tokens=20,
        extra_headers={"X-Gateway-Feature": "copilot"},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.prompt_tokens > 0
    assert raw.headers["x-gateway-job-id"].startswith("job_")
    assert raw.headers["x-gateway-deployment"] == "gpt-4o-mini@sim"
    assert raw.headers["x-gateway-model"] == "gpt-4o-mini"
    assert int(raw.headers["x-gateway-tokens-in"]) == completion.usage.prompt_tokens
    assert float(raw.headers["x-gateway-cost-usd"]) > 0
    assert raw.headers["x-gateway-cache"] == "bypass"  # no temperature: sampled, so never cached
    job = stack.client().get(f"/v1/jobs/{raw.headers['x-gateway-job-id']}").json()
    assert job["feature"] == "copilot" and job["priority"] == "interactive"
    assert job["status"] == "succeeded"


@pytest.mark.anyio
async def test_openai_async_client_runs_many_concurrent_calls(stack: Stack) -> None:
    import asyncio

    client = openai.AsyncOpenAI(base_url=f"{stack.url}/v1", api_key=stack.keys["globex"], max_retries=0)
    results = await asyncio.gather(*[
        client.chat.completions.create(model="gpt-4o-mini", max_tokens=10,
                                       messages=[{"role": "user", "content": f"question {i}"}])
        for i in range(20)
    ])
    assert all(r.choices[0].message.content for r in results)
    assert len({r.id for r in results}) == 20
    await client.close()


def test_openai_streaming_yields_content_and_usage(stack: Stack) -> None:
    stream = _openai(stack).chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "stream please"}], max_tokens=16,
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_models_list_shows_configured_models(stack: Stack) -> None:
    ids = {m.id for m in _openai(stack).models.list()}
    assert {"gpt-4o-mini", "fast", "claude-haiku-4-5"} <= ids


def test_openai_sdk_sees_errors_in_openai_format(stack: Stack) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        _openai(stack).chat.completions.create(model="no-such-model",
                                               messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in str(err.value)
    bad = openai.OpenAI(base_url=f"{stack.url}/v1", api_key="gw-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])


def test_anthropic_sdk_messages_through_an_anthropic_deployment(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    raw = client.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=32, system="Be brief.",
        messages=[{"role": "user", "content": "Hello Claude"}],
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert raw.headers["x-gateway-deployment"] == "claude-haiku@sim"


def test_anthropic_sdk_can_reach_an_openai_deployment(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    message = client.messages.create(model="gpt-4o-mini", max_tokens=16,
                                     messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text
    assert message.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_sdk_streaming(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=16,
                                messages=[{"role": "user", "content": "stream"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.usage.output_tokens > 0


def test_anthropic_sdk_sees_errors_in_anthropic_format(stack: Stack) -> None:
    client = anthropic.Anthropic(base_url=stack.url, api_key=stack.keys["acme"], max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert err.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
