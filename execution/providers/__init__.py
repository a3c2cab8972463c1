"""Provider adapters: send one OpenAI-format chat request to one deployment, get an OpenAI answer back.

    adapter = adapter_for(deployment_config, provider_config)
    result = adapter.call(request)          # ProviderResult, or raises ProviderCallError / InvalidRequest
    rate_limit_state(result.headers)        # the provider's own meter, for budget sync

Sync API over one pooled httpx client per process; workers call it from their thread pool.
"""

from execution.providers.anthropic_adapter import AnthropicAdapter
from execution.providers.base import ProviderAdapter, ProviderResult, Usage
from execution.providers.errors import RETRYABLE_KINDS, Kind, ProviderCallError, retry_after_s
from execution.providers.openai_adapter import OpenAIAdapter
from execution.providers.ratelimits import rate_limit_state
from execution.providers.registry import adapter_for, close_clients

__all__ = [
    "RETRYABLE_KINDS", "AnthropicAdapter", "Kind", "OpenAIAdapter", "ProviderAdapter", "ProviderCallError",
    "ProviderResult", "Usage", "adapter_for", "close_clients", "rate_limit_state", "retry_after_s",
]
