"""Pre-flight estimates: what a request will cost in each provider meter before it is sent.

Input is counted with the offline tokenizer (``shared.tokens``) and corrected by a per-model ratio of
reported to estimated prompt tokens (``Calibrator``), because the provider's own count differs from
ours (chat framing, tool schemas, other tokenizers). Output is what the provider meters at request
time: OpenAI charges ``max_tokens`` (times ``n``) up front, so that is the estimate; Anthropic meters
output as it is produced, so the estimate is the learned average output of this tenant and feature,
capped by ``max_tokens``, and ``max_tokens`` until something has been learned.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import redis

from shared.config import DeploymentConfig
from shared.keys import Keys
from shared.lua import script
from shared.tokens import TOKENS_PER_MESSAGE, count_content_tokens, count_message_tokens

RATIO_MIN, RATIO_MAX = 0.5, 2.0
ALPHA = 0.1  # weight of one new observation in the moving averages
MIN_OUTPUT_SAMPLES = 3  # a learned output estimate is used only after this many observations
CACHE_S = 5.0


@dataclass(frozen=True)
class Estimate:
    """Tokens a request is expected to cost: prompt and output."""

    input_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


def prompt_tokens(request: dict[str, Any], model: str | None = None) -> int:
    """Prompt tokens of a chat request: messages, tool definitions and an Anthropic-style ``system``."""
    total = count_message_tokens(request.get("messages") or [], model, tools=request.get("tools"))
    system = request.get("system")
    if system:
        total += TOKENS_PER_MESSAGE + count_content_tokens(system, model)
    return total


def output_cap(request: dict[str, Any], deployment: DeploymentConfig) -> int:
    """The output the request allows: max_completion_tokens, max_tokens or the deployment's default,
    times ``n`` choices."""
    cap = request.get("max_completion_tokens") or request.get("max_tokens") or deployment.default_max_tokens
    return int(cap) * max(1, int(request.get("n") or 1))


def estimate(request: dict[str, Any], deployment: DeploymentConfig, provider_kind: str, *,
             prompt: int | None = None, learned_output: float | None = None, calibration: float = 1.0) -> Estimate:
    """What ``deployment``'s meter will charge for ``request`` (see the module docstring). ``prompt``:
    its ``prompt_tokens`` when already counted (a job's are counted once, when it is accepted)."""
    counted = prompt_tokens(request, deployment.model) if prompt is None else prompt
    input_tokens = math.ceil(counted * calibration)
    cap = output_cap(request, deployment)
    output = cap
    if provider_kind == "anthropic" and learned_output is not None:
        output = min(cap, math.ceil(learned_output))
    return Estimate(input_tokens=input_tokens, output_tokens=max(0, output))


class Calibrator:
    """Moving averages in Redis, shared by every process: input ratio per model, output per feature.

    Reads are cached in-process for ``CACHE_S`` seconds: the scheduler asks once per job and the
    averages move slowly.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, cache_s: float = CACHE_S) -> None:
        self.r = client
        self.keys = keys
        self.cache_s = cache_s
        self._ewma = client.register_script(script("budget_ewma"))
        self._cache: dict[str, tuple[float, tuple[float | None, int]]] = {}

    def observe(self, model: str, estimated_input: int, reported_input: int) -> None:
        """Fold one reported prompt count into the model's ratio (ignored when either side is 0)."""
        if estimated_input > 0 and reported_input > 0:
            self._fold(self.keys.input_calibration(model), reported_input / estimated_input)

    def ratio(self, model: str) -> float:
        """Reported / estimated prompt tokens for ``model``, clamped to [0.5, 2]; 1 when unknown."""
        value, _ = self._read(self.keys.input_calibration(model))
        if value is None:
            return 1.0
        return min(RATIO_MAX, max(RATIO_MIN, value))

    def observe_output(self, tenant: str, feature: str, model: str, output_tokens: int) -> None:
        self._fold(self.keys.output_estimate(tenant, feature, model), float(max(0, output_tokens)))

    def learned_output(self, tenant: str, feature: str, model: str) -> float | None:
        """Average output tokens of this tenant x feature x model, once enough has been seen."""
        value, n = self._read(self.keys.output_estimate(tenant, feature, model))
        return value if n >= MIN_OUTPUT_SAMPLES else None

    def _fold(self, key: str, sample: float) -> None:
        self._ewma(keys=[key], args=[repr(sample), repr(ALPHA)])
        self._cache.pop(key, None)

    def _read(self, key: str) -> tuple[float | None, int]:
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit and now - hit[0] < self.cache_s:
            return hit[1]
        value, n = self.r.hmget(key, ["value", "n"])
        result = (float(value) if value is not None else None, int(n or 0))
        self._cache[key] = (now, result)
        return result
