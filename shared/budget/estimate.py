"""Pre-flight estimates: what a request will cost in each provider meter before it is sent.

Input is counted twice when a job is accepted, with the offline tokenizer (``shared.tokens``) and as
characters / 4 (how some providers meter), and each deployment learns from the usage it reports
which of the two predicts its count better and by what ratio (``Calibrator``): the provider's count
differs from ours (chat framing, tool schemas, other tokenizers, a meter that counts characters), so
the estimate converges wherever the truth is, random-letter text included. Output is what the provider meters at request
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

from shared import dialects
from shared.config import DeploymentConfig
from shared.keys import Keys
from shared.lua import script
from shared.redis_batch import ScriptCall
from shared.tokens import TOKENS_PER_MESSAGE, count_content_tokens, count_message_tokens

RATIO_MIN, RATIO_MAX = 0.2, 5.0  # a deployment's learned ratio, kept sane against a few outliers
MIN_INPUT_SAMPLES = 3  # a learned input rule is used only after this many observations
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


def prompt_tokens(request: dict[str, Any], model: str | None = None, *, by_chars: bool = False) -> int:
    """Prompt tokens of a chat request: messages, tool definitions and an Anthropic-style ``system``;
    ``by_chars``: counted as characters / 4, the rule of providers that meter by length."""
    total = count_message_tokens(request.get("messages") or [], model, tools=request.get("tools"),
                                 estimate_only=by_chars)
    system = request.get("system")
    if system:
        total += TOKENS_PER_MESSAGE + count_content_tokens(system, model, estimate_only=by_chars)
    return total


def output_cap(request: dict[str, Any], deployment: DeploymentConfig, dialect: str = "openai") -> int:
    """The output the request allows: max_completion_tokens, max_tokens or the deployment's default
    (none for embeddings, ``shared.dialects.output_cap``), times ``n`` choices."""
    cap = dialects.output_cap(request, dialect, deployment.default_max_tokens)
    return cap * max(1, int(request.get("n") or 1))


def estimate(request: dict[str, Any], deployment: DeploymentConfig, provider_kind: str, *,
             prompt: int | None = None, learned_output: float | None = None, calibration: float = 1.0,
             dialect: str = "openai") -> Estimate:
    """What ``deployment``'s meter will charge for ``request`` (see the module docstring). ``prompt``:
    its ``prompt_tokens`` when already counted (a job's are counted once, when it is accepted)."""
    counted = prompt_tokens(request, deployment.model) if prompt is None else prompt
    input_tokens = math.ceil(counted * calibration)
    cap = output_cap(request, deployment, dialect)
    output = cap
    if provider_kind == "anthropic" and learned_output is not None:
        output = min(cap, math.ceil(learned_output))
    return Estimate(input_tokens=input_tokens, output_tokens=max(0, output))


class Calibrator:
    """Moving averages in Redis, shared by every process: how each deployment counts prompts (two
    rules, their ratios and errors), and output per tenant x feature x model.

    Reads are cached in-process for ``CACHE_S`` seconds: the scheduler asks once per job and the
    averages move slowly.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, cache_s: float = CACHE_S) -> None:
        self.r = client
        self.keys = keys
        self.cache_s = cache_s
        self._ewma = client.register_script(script("budget_ewma"))
        self._calibrate = client.register_script(script("budget_calibrate"))
        self._cache: dict[str, tuple[float, tuple[float | None, int]]] = {}
        self._rules: dict[str, tuple[float, tuple[float, int] | None]] = {}

    def observe(self, deployment: str, tokenizer_count: int, chars_count: int, reported_input: int) -> None:
        """Fold one reported prompt count into the deployment's two rules (nothing when a side is 0)."""
        call = self.observe_call(deployment, tokenizer_count, chars_count, reported_input)
        if call is not None:
            call.run()

    def observe_call(self, deployment: str, tokenizer_count: int, chars_count: int,
                     reported_input: int) -> ScriptCall | None:
        """``observe`` as a script call to send with others (the attempt's settlement); None when a
        count is unknown (an older version's envelope has no characters count)."""
        if min(tokenizer_count, chars_count, reported_input) <= 0:
            return None
        self._rules.pop(deployment, None)
        return ScriptCall(self._calibrate, [self.keys.input_calibration(deployment)],
                          [tokenizer_count, chars_count, reported_input, repr(ALPHA)])

    def prompt_input(self, deployment: str, tokenizer_count: int, chars_count: int) -> int:
        """The prompt tokens ``deployment`` will count: the rule that has predicted it better (the
        tokenizer until it has learned, or when the characters count is not known) times its ratio."""
        rule = self._rule(deployment, chars_known=chars_count > 0)
        if rule is None:
            return tokenizer_count
        ratio, by_chars = rule
        return math.ceil((chars_count if by_chars else tokenizer_count) * min(RATIO_MAX, max(RATIO_MIN, ratio)))

    def _rule(self, deployment: str, *, chars_known: bool) -> tuple[float, int] | None:
        """(ratio, 1 when by characters) of the better rule, None until learned; cached ``cache_s``."""
        hit = self._rules.get(deployment)
        now = time.monotonic()
        if hit is None or now - hit[0] >= self.cache_s:
            tok, chr_, etok, echr, n = self.r.hmget(self.keys.input_calibration(deployment),
                                                    ["tok", "chr", "etok", "echr", "n"])
            learned = None
            if int(n or 0) >= MIN_INPUT_SAMPLES and tok is not None and chr_ is not None:
                by_chars = float(echr or 0) < float(etok or 0)
                learned = (float(chr_) if by_chars else float(tok), int(by_chars))
            hit = self._rules[deployment] = (now, learned)
        rule = hit[1]
        if rule is not None and rule[1] and not chars_known:
            return None
        return rule

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
