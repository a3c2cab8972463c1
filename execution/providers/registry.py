"""One adapter per deployment per process, built on first use."""

from __future__ import annotations

import threading

from execution.providers import http, lean_http
from execution.providers.anthropic_adapter import AnthropicAdapter
from execution.providers.base import ProviderAdapter
from execution.providers.openai_adapter import OpenAIAdapter
from shared.config import DeploymentConfig, ProviderConfig

ADAPTERS: dict[str, type[ProviderAdapter]] = {"openai": OpenAIAdapter, "anthropic": AnthropicAdapter}

_lock = threading.Lock()
_adapters: dict[str, ProviderAdapter] = {}


def adapter_for(deployment: DeploymentConfig, provider: ProviderConfig) -> ProviderAdapter:
    """The cached adapter for ``deployment.name``; rebuilt if its config changed since."""
    adapter = _adapters.get(deployment.name)
    if adapter is not None and adapter.deployment == deployment and adapter.provider == provider:
        return adapter
    with _lock:
        adapter = ADAPTERS[provider.kind](deployment, provider)
        _adapters[deployment.name] = adapter
        return adapter


def close_clients() -> None:
    """Drop cached adapters and close the pooled HTTP clients (worker shutdown, tests)."""
    with _lock:
        _adapters.clear()
    http.close_clients()
    lean_http.close_pool()
