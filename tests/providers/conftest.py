"""Fixtures for provider adapters: deployments pointed at the session's simulator, or at a mock HTTP edge.

The simulator itself (``sim_url``) and the loopback-only guard come from ``tests/conftest.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from execution.providers import AnthropicAdapter, OpenAIAdapter, ProviderAdapter, close_clients
from shared.config import DeploymentConfig, ProviderConfig, Timeouts
from tests.conftest import serving

ADAPTER = {"openai": OpenAIAdapter, "anthropic": AnthropicAdapter}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CHAT = {"model": "whatever-the-caller-said", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 20}


def make_provider(kind: str, base_url: str, **kw: Any) -> ProviderConfig:
    return ProviderConfig(kind=kind, base_url=base_url, **kw)


def make_deployment(model: str, *, name: str | None = None, **kw: Any) -> DeploymentConfig:
    kw.setdefault("timeouts", Timeouts(connect=2, read=10, total=20))
    return DeploymentConfig(name=name or f"{model}@test", provider="p", model=model, **kw)


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    yield
    close_clients()


@pytest.fixture
def mock_adapter() -> Iterator[Callable[..., ProviderAdapter]]:
    """An adapter whose HTTP edge is ``handler(request) -> httpx.Response`` (cases no server makes)."""
    clients: list[httpx.Client] = []

    def build(kind: str, handler: Callable[[httpx.Request], httpx.Response], **provider_kw: Any) -> ProviderAdapter:
        client = httpx.Client(transport=httpx.MockTransport(handler))
        clients.append(client)
        base = provider_kw.pop(
            "base_url", "https://api.example.test/v1" if kind == "openai" else "https://api.example.test"
        )
        return ADAPTER[kind](
            make_deployment(provider_kw.pop("model", "gpt-4o-mini")),
            make_provider(kind, base, **provider_kw),
            client=client,
        )

    yield build
    for client in clients:
        client.close()


STRICT_SIM_CONFIG = """
require_known_keys: true
keys: [{key: sk-sim-good}]
unknown_models: reject
models:
  gpt-4o-mini: {}
  claude-haiku-4-5: {}
"""


@pytest.fixture(scope="session")
def strict_sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second simulator that refuses unknown keys (401) and unknown models (404)."""

    config = tmp_path_factory.mktemp("strict-sim") / "sim.yaml"
    config.write_text(STRICT_SIM_CONFIG)
    with serving("ops.sim", "--host", "127.0.0.1", "--config", str(config), log="strict-sim") as url:
        yield url
