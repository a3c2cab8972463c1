"""The simulator's configuration: flags for the common case, a YAML file for several models and keys.

Validated once at start (pydantic); the request path reads plain attributes only. Example::

    seed: 7
    require_known_keys: false          # true: unknown API keys get 401
    keys:                              # optional; keys sharing an org share its limits
      - {key: sk-team-a, org: team-a}
    unknown_models: default            # or "reject" (404 model_not_found)
    defaults:                          # used for models not listed, per API format of the route
      openai:    {limits: {rpm: 600, tpm: 60000}}
      anthropic: {limits: {rpm: 600, itpm: 60000, otpm: 12000}}
    models:
      gpt-4o-mini:
        limits: {rpm: 600, tpm: 60000, burst_window_s: 60}
        latency: {ttft_ms: 300, per_token_ms: 12, jitter: 0.2}
        output: {dist: lognormal, median: 150, sigma: 0.6}
      claude-haiku-4-5:
        limits: {rpm: 50, itpm: 50000, otpm: 10000, output_rule: produced}
    faults:
      - {kind: error, status: 503, rate: 0.05, model: gpt-4o-mini}
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConfigError

ApiFormat = Literal["openai", "anthropic"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsConfig(_Strict):
    """One model's meter per org. Absent axes are unlimited.

    ``openai_charge``: ``sum`` charges prompt estimate + n x max_tokens at admission (what OpenAI
    meters in practice); ``max`` charges max(prompt estimate, n x max_tokens), the literal wording of
    OpenAI's guide. ``output_rule`` (Anthropic OTPM): ``produced`` counts output as it is generated;
    ``estimate`` reserves max_tokens at admission and refunds the unused part at the end (older rule).
    """

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    itpm: int | None = Field(None, gt=0)
    otpm: int | None = Field(None, gt=0)
    burst_window_s: float = Field(60.0, gt=0, le=60)
    openai_charge: Literal["sum", "max"] = "sum"
    output_rule: Literal["produced", "estimate"] = "produced"
    prompt_estimate: Literal["tokenizer", "chars"] = "tokenizer"


class LatencyConfig(_Strict):
    """Time to first token plus time per output token; ``jitter`` is the relative spread (0.2 = +-20%)."""

    ttft_ms: float = Field(0.0, ge=0)
    per_token_ms: float = Field(0.0, ge=0)
    jitter: float = Field(0.0, ge=0, le=1)
    stream_interval_ms: float = Field(40.0, gt=0)  # tokens are batched into one SSE event per interval

    @property
    def is_zero(self) -> bool:
        return self.ttft_ms == 0 and self.per_token_ms == 0


class OutputConfig(_Strict):
    """How long replies are when ``max_tokens`` does not cut them: real traffic is usually shorter.
    ``echo`` answers with the last user message's text (what the gateway sent, for redaction tests)."""

    dist: Literal["lognormal", "uniform", "fixed", "max", "echo"] = "lognormal"
    median: float = Field(120.0, gt=0)
    sigma: float = Field(0.6, ge=0)
    min: int = Field(1, ge=1)
    max: int = Field(1000, ge=1)
    tokens: int = Field(100, ge=1)


class WeaknessConfig(_Strict):
    """How often the model's answers fail a caller's checks, by the prompt's difficulty (``ops.sim.weakness``)."""

    fail_rate: dict[Literal["easy", "medium", "hard"], float] = Field(default_factory=dict)
    modes: list[Literal["length", "schema", "refusal", "empty"]] = Field(
        default_factory=lambda: ["schema", "length"])  # type: ignore[arg-type]
    obey_markers: bool = False  # a prompt with [[sim-fail:<mode>]] fails that way (tests)


class ModelConfig(_Strict):
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig.model_validate({}))
    latency: LatencyConfig = Field(default_factory=lambda: LatencyConfig.model_validate({}))
    output: OutputConfig = Field(default_factory=lambda: OutputConfig.model_validate({}))
    max_output_tokens: int = Field(4096, gt=0)  # charged (OpenAI) and used when max_tokens is absent
    context_window: int = Field(128_000, gt=0)
    weakness: WeaknessConfig = Field(default_factory=lambda: WeaknessConfig.model_validate({}))


def _openai_default() -> ModelConfig:
    return ModelConfig.model_validate({"limits": {"rpm": 600, "tpm": 60_000}})


def _anthropic_default() -> ModelConfig:
    return ModelConfig.model_validate({"limits": {"rpm": 600, "itpm": 60_000, "otpm": 12_000}})


class Defaults(_Strict):
    openai: ModelConfig = Field(default_factory=_openai_default)
    anthropic: ModelConfig = Field(default_factory=_anthropic_default)


class KeyConfig(_Strict):
    key: str
    org: str | None = None  # keys of one org share its limits, as provider keys of one account do


class FaultConfig(_Strict):
    """One fault rule; see ops/sim/faults.py for what each kind does."""

    kind: Literal["error", "outage", "slowdown", "hang", "reset", "malformed", "storm", "cut"]
    rate: float | None = Field(None, ge=0, le=1)  # probability per request; default 1 for outage/slowdown
    status: int | None = Field(None, ge=400, le=599)
    factor: float = Field(5.0, gt=0)  # slowdown multiplier
    hang_s: float = Field(600.0, ge=0)
    after_events: int = Field(3, ge=0)  # cut: events a stream sends before its connection is reset
    retry_after_s: float = Field(1.0, ge=0)
    after_s: float = Field(0.0, ge=0)  # window start, seconds after the fault is installed
    duration_s: float | None = Field(None, gt=0)  # window length; None = until removed
    model: str | None = None
    key: str | None = None


class StatsConfig(_Strict):
    sample_interval_s: float = Field(1.0, gt=0)
    history: int = Field(600, gt=0)


class SimulatorConfig(_Strict):
    seed: int = 0
    require_known_keys: bool = False
    keys: list[KeyConfig] = Field(default_factory=list)
    unknown_models: Literal["default", "reject"] = "default"
    defaults: Defaults = Field(default_factory=Defaults)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    faults: list[FaultConfig] = Field(default_factory=list)
    stats: StatsConfig = Field(default_factory=lambda: StatsConfig.model_validate({}))

    def org_of(self, key: str) -> str | None:
        """The org a key belongs to; None for keys not listed."""
        for entry in self.keys:
            if entry.key == key:
                return entry.org or entry.key
        return None


REALISTIC_LATENCY = LatencyConfig.model_validate({"ttft_ms": 400, "per_token_ms": 15, "jitter": 0.25})


def load_config(path: Path | str | None) -> SimulatorConfig:
    """Read and validate a YAML file; no file gives the built-in defaults."""
    if path is None:
        return SimulatorConfig()
    file_path = Path(path)
    try:
        data = yaml.safe_load(file_path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"simulator config {file_path}: {exc}") from exc
    try:
        return SimulatorConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"simulator config {file_path}: {exc}") from exc


def apply_flags(
    config: SimulatorConfig,
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    itpm: int | None = None,
    otpm: int | None = None,
    latency: Literal["zero", "realistic"] | None = None,
) -> SimulatorConfig:
    """Command-line limits set the defaults (models not listed in the file); flags beat the file."""
    openai, anthropic = config.defaults.openai, config.defaults.anthropic
    if rpm:
        openai.limits.rpm = anthropic.limits.rpm = rpm
    if tpm:
        openai.limits.tpm = tpm
        anthropic.limits.itpm = itpm or tpm
        anthropic.limits.otpm = otpm or max(1, tpm // 5)
    if itpm:
        anthropic.limits.itpm = itpm
    if otpm:
        anthropic.limits.otpm = otpm
    if latency == "realistic":
        for model in (openai, anthropic, *config.models.values()):
            model.latency = REALISTIC_LATENCY.model_copy()
    elif latency == "zero":
        for model in (openai, anthropic, *config.models.values()):
            model.latency = LatencyConfig.model_validate({})
    return config
