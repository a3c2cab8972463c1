"""Anthropic's Messages API: an Anthropic-format request goes out as written (``shared.dialects``), an
OpenAI one translated (``shared.translate``); the answer comes back in the OpenAI chat format.

Posts to ``{base_url}/v1/messages`` (``base_url`` is the API host, e.g. ``https://api.anthropic.com``;
a base URL already ending in ``/v1`` is accepted too) with ``x-api-key`` and ``anthropic-version``
(``ProviderConfig.api_version``). ``max_tokens``, which Anthropic requires, defaults to
``DeploymentConfig.default_max_tokens``.
"""

from __future__ import annotations

from typing import Any

import httpx

from execution.providers.base import ProviderAdapter, Usage
from shared.config import DeploymentConfig, ProviderConfig
from shared.translate import anthropic_to_openai_response


class AnthropicAdapter(ProviderAdapter):
    kind = "anthropic"
    dialect = "anthropic"

    def __init__(
        self, deployment: DeploymentConfig, provider: ProviderConfig, client: httpx.Client | None = None
    ) -> None:
        super().__init__(deployment, provider, client)
        base = provider.base_url.rstrip("/").removesuffix("/v1")
        self.url = f"{base}/v1/messages"
        self.headers = {
            "content-type": "application/json",
            "anthropic-version": provider.api_version,
            **({"x-api-key": key} if (key := provider.api_key()) else {}),
            **provider.headers,
        }

    def problem_with(self, payload: dict[str, Any]) -> str | None:
        if payload.get("type") == "error":
            return f"an error object with a success status: {payload.get('error')}"
        content = payload.get("content")
        if not isinstance(content, list) or not all(isinstance(block, dict) for block in content):
            return "no content block list in the body"
        return None

    def to_openai(self, payload: dict[str, Any]) -> dict[str, Any]:
        return anthropic_to_openai_response(payload, payload.get("model") or self.deployment.model)

    def usage_of(self, payload: dict[str, Any]) -> Usage:
        usage = payload.get("usage")
        return Usage.from_anthropic(usage if isinstance(usage, dict) else None)
