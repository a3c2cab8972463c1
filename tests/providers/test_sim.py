"""Adapters over real HTTP against the provider simulator, faults injected at run time.

Faults are scoped to a model name unique to each test, so they never touch other tests sharing the
session's simulator, and are removed afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from execution.providers import ProviderAdapter, ProviderCallError, adapter_for, close_clients, rate_limit_state
from execution.providers.http import shared_client
from shared.config import Timeouts
from tests.conftest import free_port
from tests.providers.conftest import CHAT, WEATHER_TOOL, make_deployment, make_provider


@pytest.fixture
def sim_adapter(sim_url: str) -> Callable[..., ProviderAdapter]:
    """``sim_adapter(kind, model=..., timeouts=...)``: a cached adapter for a deployment on the simulator."""

    def build(kind: str, model: str | None = None, **deployment_kw: Any) -> ProviderAdapter:
        model = model or f"{kind}-model-{uuid.uuid4().hex[:8]}"
        base = f"{sim_url}/v1" if kind == "openai" else sim_url
        return adapter_for(make_deployment(model, **deployment_kw), make_provider(kind, base))

    return build


@pytest.fixture
def fault(sim_url: str) -> Iterator[Callable[..., None]]:
    """``fault(kind, model, **rule)`` installs a simulator fault rule; all are removed at teardown."""
    ids: list[int] = []

    def install(kind: str, model: str, **rule: Any) -> None:
        response = httpx.post(f"{sim_url}/sim/faults", json={"kind": kind, "model": model, **rule}, timeout=5)
        response.raise_for_status()
        ids.extend(f["id"] for f in response.json()["added"])

    yield install
    for fault_id in ids:
        httpx.delete(f"{sim_url}/sim/faults/{fault_id}", timeout=5)


def call_error(adapter: ProviderAdapter, request: dict | None = None) -> ProviderCallError:
    with pytest.raises(ProviderCallError) as caught:
        adapter.call(request or CHAT)
    return caught.value


# --------------------------------------------------------------------------- successes


def test_openai_call_returns_completion_usage_and_rate_limit_state(sim_adapter):
    adapter = sim_adapter("openai", model="gpt-4o-mini", name="gpt-4o-mini@sim-test")
    result = adapter.call(CHAT)
    assert result.status == 200 and result.deployment == "gpt-4o-mini@sim-test"
    assert result.body["object"] == "chat.completion"
    assert result.body["model"].startswith("gpt-4o-mini")  # the deployment's model, not the caller's
    assert result.body["choices"][0]["message"]["content"]
    assert result.usage.input_tokens == result.body["usage"]["prompt_tokens"] > 0
    assert 0 < result.usage.output_tokens <= 20
    state = rate_limit_state(result.headers)
    assert state["requests_remaining"] < state["requests_limit"]
    assert "tokens_remaining" in state and state["requests_reset_s"] >= 0


def test_anthropic_call_is_translated_to_openai(sim_adapter):
    adapter = sim_adapter("anthropic", model="claude-haiku-4-5")
    request = {**CHAT, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    result = adapter.call(request)
    body = result.body
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    assert isinstance(body["choices"][0]["message"]["content"], str)
    assert body["usage"]["total_tokens"] == result.usage.input_tokens + result.usage.output_tokens
    assert result.usage.output_tokens <= 20
    state = rate_limit_state(result.headers)
    assert "requests_remaining" in state and "input_tokens_remaining" in state


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_forced_tool_call_comes_back_as_openai_tool_calls(sim_adapter, kind):
    adapter = sim_adapter(kind)
    result = adapter.call(
        {**CHAT, "tools": [WEATHER_TOOL], "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    )
    choice = result.body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"]), dict)


def test_many_threads_share_one_pooled_client(sim_adapter):
    adapters = [sim_adapter("openai"), sim_adapter("anthropic")]
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda i: adapters[i % 2].call(CHAT), range(200)))
    assert all(r.status == 200 for r in results)
    assert all(a.client is shared_client() for a in adapters)


def test_adapter_for_caches_per_deployment_and_close_resets(sim_url):
    deployment, provider = make_deployment("gpt-4o-mini"), make_provider("openai", f"{sim_url}/v1")
    first = adapter_for(deployment, provider)
    assert adapter_for(deployment, provider) is first
    client = first.client
    close_clients()
    assert adapter_for(deployment, provider) is not first
    assert shared_client() is not client


# --------------------------------------------------------------------------- failures over the wire


@pytest.mark.parametrize(
    ("kind", "status", "error_kind"),
    [
        ("openai", 500, "server"),
        ("openai", 503, "overloaded"),
        ("anthropic", 529, "overloaded"),
        ("anthropic", 502, "server"),
    ],
)
def test_injected_server_errors_are_retryable(sim_adapter, fault, kind, status, error_kind):
    adapter = sim_adapter(kind)
    fault("error", adapter.deployment.model, status=status)
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == (error_kind, status, True)
    assert isinstance(err.body, dict) and "error" in err.body


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_429_storm_carries_retry_after(sim_adapter, fault, kind):
    adapter = sim_adapter(kind)
    fault("storm", adapter.deployment.model, retry_after_s=3)
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == ("rate_limit", 429, True)
    assert err.retry_after_s == pytest.approx(3.0)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_hung_provider_times_out(sim_adapter, fault, kind):
    adapter = sim_adapter(kind, timeouts=Timeouts(connect=1, read=0.3, total=5))
    fault("hang", adapter.deployment.model, hang_s=30)
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == ("timeout", None, True)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_connection_reset_is_a_retryable_connection_error(sim_adapter, fault, kind):
    adapter = sim_adapter(kind)
    fault("reset", adapter.deployment.model)
    err = call_error(adapter)
    assert (err.kind, err.retryable) == ("connection", True)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_malformed_body_is_retryable(sim_adapter, fault, kind):
    adapter = sim_adapter(kind)
    fault("malformed", adapter.deployment.model)
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == ("malformed", 200, True)


def test_connection_refused():
    port = free_port()  # nothing listens there
    adapter = adapter_for(make_deployment("gpt-4o-mini"), make_provider("openai", f"http://127.0.0.1:{port}/v1"))
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == ("connection", None, True)
    assert "ConnectError" in err.message


@pytest.mark.parametrize(
    ("kind", "request_"),
    [
        ("openai", {"messages": [{"role": "user", "content": "x"}], "max_tokens": -1}),
        ("anthropic", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}),
    ],
)
def test_provider_400_is_not_retryable(sim_adapter, kind, request_):
    err = call_error(sim_adapter(kind), request_)
    assert (err.kind, err.upstream_status, err.retryable) == ("bad_request", 400, False)
    assert "max_tokens" in err.message


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_real_rate_limit_429_is_retryable_after_the_providers_wait(sim_url, sim_adapter, kind):
    adapter = sim_adapter(kind)
    limits = httpx.post(
        f"{sim_url}/sim/limits", json={"model": adapter.deployment.model, "api": kind, "rpm": 1}, timeout=5
    )
    limits.raise_for_status()
    adapter.call(CHAT)
    err = call_error(adapter)
    assert (err.kind, err.upstream_status, err.retryable) == ("rate_limit", 429, True)
    assert err.retry_after_s is not None and 0 < err.retry_after_s <= 60
    assert rate_limit_state(err.headers)["requests_remaining"] == 0


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_request_larger_than_the_limit_says_do_not_retry(sim_url, sim_adapter, kind):
    adapter = sim_adapter(kind)
    axis = {"tpm": 50} if kind == "openai" else {"itpm": 50, "otpm": 50}
    limits = httpx.post(
        f"{sim_url}/sim/limits", json={"model": adapter.deployment.model, "api": kind, **axis}, timeout=5
    )
    limits.raise_for_status()
    # OpenAI meters prompt + max_tokens at admission, Anthropic the prompt: make both too big.
    long_prompt = [{"role": "user", "content": "lorem ipsum " * 100}]
    err = call_error(adapter, {**CHAT, "messages": long_prompt, "max_tokens": 1000})
    assert (err.kind, err.upstream_status, err.retryable) == ("rate_limit", 429, False)
    assert err.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_wrong_key_is_auth_and_unknown_model_is_not_found(strict_sim_url, monkeypatch, kind):
    monkeypatch.setenv("SIM_GOOD_KEY", "sk-sim-good")
    monkeypatch.setenv("SIM_BAD_KEY", "sk-sim-bad")
    base = f"{strict_sim_url}/v1" if kind == "openai" else strict_sim_url
    model = "gpt-4o-mini" if kind == "openai" else "claude-haiku-4-5"

    good = adapter_for(make_deployment(model, name="good"), make_provider(kind, base, api_key_env="SIM_GOOD_KEY"))
    assert good.call(CHAT).status == 200

    bad_key = adapter_for(make_deployment(model, name="bad-key"), make_provider(kind, base, api_key_env="SIM_BAD_KEY"))
    err = call_error(bad_key)
    assert (err.kind, err.upstream_status, err.retryable) == ("auth", 401, False)

    no_key = adapter_for(make_deployment(model, name="no-key"), make_provider(kind, base, api_key_env="SIM_UNSET"))
    assert call_error(no_key).kind == "auth"

    unknown = adapter_for(
        make_deployment("no-such-model", name="unknown"), make_provider(kind, base, api_key_env="SIM_GOOD_KEY")
    )
    err = call_error(unknown)
    assert (err.kind, err.upstream_status, err.retryable) == ("not_found", 404, False)
    assert "no-such-model" in err.message
