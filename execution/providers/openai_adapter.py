"""OpenAI and everything that speaks its Chat Completions API: vLLM, Ollama, Azure OpenAI.

``base_url`` is the API root the provider documents, ending in ``/v1`` for OpenAI, vLLM and Ollama
(``http://localhost:11434/v1``); the adapter posts to ``{base_url}/chat/completions``. An OpenAI-format
request goes out as the caller wrote it, unknown fields included (``shared.dialects``).

Azure: a base URL on ``*.openai.azure.com`` / ``*.cognitiveservices.azure.com``, or one with a
``/deployments/<name>`` path, authenticates with an ``api-key`` header instead of a bearer token. With
a ``/deployments/`` path (the classic Azure API) the ``api-version`` query parameter is added from
``ProviderConfig.api_version``; because that field defaults to Anthropic's version date, the default is
replaced by ``AZURE_API_VERSION`` here, and any explicitly configured value is used as is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from execution.providers.base import ProviderAdapter, Usage
from shared.config import DeploymentConfig, ProviderConfig

AZURE_API_VERSION = "2024-10-21"
_AZURE_HOSTS = (".openai.azure.com", ".cognitiveservices.azure.com")


def is_azure(base_url: str) -> bool:
    parts = urlsplit(base_url)
    return (parts.hostname or "").endswith(_AZURE_HOSTS) or "/deployments/" in parts.path + "/"


class OpenAIAdapter(ProviderAdapter):
    kind = "openai"
    dialect = "openai"

    def __init__(
        self, deployment: DeploymentConfig, provider: ProviderConfig, client: httpx.Client | None = None
    ) -> None:
        super().__init__(deployment, provider, client)
        base = provider.base_url.rstrip("/")
        self.url = f"{base}/chat/completions"
        self.endpoints = {"embeddings": f"{base}/embeddings", "completions": f"{base}/completions"}
        self.headers = {"content-type": "application/json", **_auth_headers(provider), **provider.headers}
        if is_azure(base) and "/deployments/" in urlsplit(base).path + "/":
            self.params = {"api-version": _azure_api_version(provider)}

    def stream_body(self, request: dict[str, Any], dialect: str = "openai") -> dict[str, Any]:
        """Always with the usage: the reservation settles on it (the caller sees it only if it asked)."""
        return {**super().stream_body(request, dialect), "stream_options": {"include_usage": True}}

    def problem_with(self, payload: dict[str, Any]) -> str | None:
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices:
            return "no choices in the body"
        if not isinstance(choices[0], dict) or not isinstance(choices[0].get("message"), dict):
            return "the first choice has no message"
        return None

    def to_openai(self, payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    def usage_of(self, payload: dict[str, Any]) -> Usage:
        usage = payload.get("usage")
        return Usage.from_openai(usage if isinstance(usage, dict) else None)


def _auth_headers(provider: ProviderConfig) -> dict[str, str]:
    key = provider.api_key()
    if not key:
        return {}
    if is_azure(provider.base_url):
        return {"api-key": key}
    return {"authorization": f"Bearer {key}"}


def _azure_api_version(provider: ProviderConfig) -> str:
    if provider.api_version == ProviderConfig.model_fields["api_version"].default:
        return AZURE_API_VERSION
    return provider.api_version
