"""Gateway configuration: one YAML file, validated once at start, overridable by ``GATEWAY_*``.

Secrets never live in the file: a provider names the environment variable that holds its key
(``api_key_env``). With no file at all the embedded default runs: SQLite under ``./var``, the local
Redis and the provider simulator (``sim.host``/``sim.port``, 127.0.0.1:9100) as both an OpenAI and
an Anthropic provider.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError
from shared.lanes import Lane

log = logging.getLogger("gateway.config")



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Per-deployment HTTP timeouts in seconds; ``total`` bounds a whole attempt."""

    connect: float = Field(5.0, gt=0)
    read: float = Field(120.0, gt=0)
    total: float = Field(300.0, gt=0)


class BreakerConfig(_Strict):
    """Per-deployment circuit breaker (shared in Redis by every process; see ``shared/breaker``).

    Opens when, over the last ``window_s``, at least ``min_calls`` outcomes were seen and the share of
    failures reaches ``failure_rate``, or after ``consecutive_429`` rate-limit failures in a row. A call
    slower than ``slow_call_s`` counts as a failure. Open fails fast for ``open_s``, then half-open
    admits ``half_open_probes`` probes; a probe that never reports frees its slot after
    ``probe_timeout_s``.
    """

    enabled: bool = True
    window_s: float = Field(default=30.0, gt=0, le=3600)
    min_calls: int = Field(default=10, ge=1)
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    consecutive_429: int = Field(default=5, ge=1)
    slow_call_s: float | None = Field(default=60.0, gt=0)
    open_s: float = Field(default=15.0, gt=0)
    half_open_probes: int = Field(default=3, ge=1)
    probe_timeout_s: float = Field(default=60.0, gt=0)


class ProviderConfig(_Strict):
    """Where an account lives and how to authenticate; the wire format is picked by ``kind``."""

    kind: Literal["openai", "anthropic"]
    base_url: str
    api_key_env: str | None = None
    api_version: str = "2023-06-01"
    headers: dict[str, str] = Field(default_factory=dict)

    def api_key(self) -> str:
        """The secret, read from the environment only when a worker needs it."""
        if not self.api_key_env:
            return "sk-gateway-no-key"
        return os.environ.get(self.api_key_env, "")


class Limits(_Strict):
    """The provider account's own meter for one model: RPM and TPM, or ITPM+OTPM (Anthropic)."""

    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    itpm: int | None = Field(None, gt=0)
    otpm: int | None = Field(None, gt=0)


class Price(_Strict):
    """USD per million tokens; overrides genai-prices for a deployment (self-hosted, negotiated)."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)


class DeploymentConfig(_Strict):
    """One provider account x model: the unit that has limits, a breaker and a price."""

    name: str
    provider: str
    model: str
    limits: Limits = Field(default_factory=Limits)
    headroom: float = Field(0.95, gt=0, le=1)
    default_max_tokens: int = Field(1024, gt=0)
    burst_s: float = Field(60.0, gt=0, le=60, description="seconds of the per-minute limit allowed at once")
    max_context_tokens: int = Field(128_000, gt=0)
    price: Price | None = None
    timeouts: Timeouts = Field(default_factory=Timeouts)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)


class LaneConfig(_Strict):
    """A priority lane: interactive has a reserved share, the others a ceiling."""

    reserve: float = Field(0.0, ge=0, le=1)
    ceiling: float = Field(1.0, gt=0, le=1)
    deadline_s: float = Field(600.0, gt=0)
    max_queue_per_tenant: int = Field(100_000, gt=0)


def _default_lanes() -> dict[Lane, LaneConfig]:
    return {
        Lane.INTERACTIVE: LaneConfig(reserve=0.3, deadline_s=60),
        Lane.STANDARD: LaneConfig(deadline_s=900),
        Lane.BATCH: LaneConfig(ceiling=0.7, deadline_s=86_400),
    }


class FeatureConfig(_Strict):
    lane: Lane | None = Field(None, description="the lane every job of the feature runs in, whatever it asks")
    hard_tpm: int | None = Field(None, gt=0)


class TenantConfig(_Strict):
    """A tenant's share, limits, and what its keys may ask for (see ``shared.tenancy``)."""

    weight: float = Field(1.0, gt=0)
    soft_tpm: int | None = Field(None, gt=0)
    hard_tpm: int | None = Field(None, gt=0)
    max_lane: Lane = Field(Lane.INTERACTIVE, description="the highest-priority lane its keys may ask for; "
                           "a request for a higher one is a 403, and a route's default is lowered to it")
    unknown_features: Literal["allow", "refuse"] = Field(
        "allow", description="a feature not listed under features: accepted (no cap, metrics label 'other'), "
                             "or refused with a 400 that lists the known ones")
    features: dict[str, FeatureConfig] = Field(default_factory=dict)

    @field_validator("features")
    @classmethod
    def _lowercase_names(cls, features: dict[str, FeatureConfig]) -> dict[str, FeatureConfig]:
        """Callers' feature names are case-insensitive (``shared.schemas.Feature``), so are these."""
        lowered = {name.lower(): cfg for name, cfg in features.items()}
        if len(lowered) != len(features):
            raise ValueError(f"feature names differ only in case: {sorted(features)}")
        return lowered


class ApiConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_batch_body_bytes: int = Field(64 * 1024 * 1024, gt=0, description="body limit of POST /v1/jobs/batch")
    max_batch_jobs: int = Field(1000, gt=0, le=10_000, description="jobs per POST /v1/jobs/batch; the cap "
                                "keeps each batch's SQL IN lists under every backend's bind-parameter limit")
    max_sync_wait_s: float = Field(600.0, gt=0)
    header_timeout_s: float = Field(10.0, gt=0, description="a request head not complete this long after its "
                                    "connection opened or its first byte came is answered 408 and closed")
    body_timeout_s: float = Field(30.0, gt=0, description="a request body that sends nothing for this long is "
                                  "answered 408 and closed; also bounds reading a refused body's rest")
    max_header_bytes: int = Field(64 * 1024, gt=0, description="a request head (line and headers) larger than "
                                  "this is answered 431 and closed")
    max_connections: int = Field(2048, gt=0, description="open connections per api process; past it requests "
                                 "are answered 503 (uvicorn's limit_concurrency)")
    keep_alive_s: float = Field(15.0, gt=0, description="how long an idle keep-alive connection stays open; "
                                "longer than the 5 s SDK pools keep one, so the client closes it first")
    fast_lane_attempts: int = Field(
        64, ge=0, le=4096,
        description="fast-lane first attempts each api process sends itself (a thread each, for the call's "
                    "length); past that, or at 0, they go through the Celery workers like every other attempt")
    page_size_max: int = Field(500, gt=0)
    admin_key_env: str = "GATEWAY_ADMIN_KEY"
    auth_failures_per_minute: int = Field(
        30, gt=0, description="failed authentications each source address may have per minute; past that its "
                              "unknown keys get a 429 without a lookup")
    max_batch_uploads: int = Field(
        4, gt=0, description="POST /v1/jobs/batch bodies read at once per api process; more wait their turn "
                             "(up to batch_upload_wait_s, then 503) without their bodies being read")
    batch_upload_wait_s: float = Field(30.0, gt=0)
    metrics_public: bool = Field(
        False, description="serve /metrics without the operators' key (only behind a network that keeps "
                           "tenants out: it names every tenant, feature and their spend)")

    def admin_key(self) -> str | None:
        """The operators' key for /v1/admin/* (from the environment; admin routes are off without it)."""
        return os.environ.get(self.admin_key_env) or None


class WorkerConfig(_Strict):
    pool: Literal["threads", "gevent", "prefork", "solo"] = "threads"
    concurrency: int = Field(64, gt=0)


class RetryConfig(_Strict):
    """Retries as re-admission: attempt cap, full-jitter backoff, per-deployment retry budget."""

    max_attempts: int = Field(3, ge=1, le=20)
    backoff_base_s: float = Field(0.5, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)
    budget_ratio: float = Field(0.1, ge=0, le=1)
    budget_floor_per_min: int = Field(10, ge=0)


class AdmissionConfig(_Strict):
    """Budget-aware admission; ``enabled: false`` sends every job at once (for comparison runs only)."""

    enabled: bool = True
    dispatch_lease_s: float = Field(60.0, gt=0, description="how long an admitted job may wait for a worker "
                                    "before recovery dispatches it again")
    reconcile_every_s: float = Field(5.0, gt=0)
    lease_margin_s: float = Field(30.0, gt=0, description="added to a deployment's total timeout for "
                                  "the lease a worker holds while it calls")


class RetentionConfig(_Strict):
    """How long finished jobs keep their content and their rows, in days after they finished; null: forever.

    A job's ``request`` and ``result`` are a tenant's prompts and answers: after ``job_content_days``
    they are dropped and the row keeps what billing needs (ids, tenant, feature, model, tokens, cost).
    After ``jobs_days`` the row goes too, with its attempts. At least a day, so the 24 h idempotency
    window still finds a repeated request to compare with.
    """

    job_content_days: float | None = Field(30.0, ge=1)
    jobs_days: float | None = Field(None, ge=1)


class FeatureCacheConfig(_Strict):
    """One tenant x feature's cache: exact on/off, the semantic opt-in and its threshold and TTL."""

    exact: bool = Field(True, description="serve and store exact repeats")
    semantic: bool = Field(False, description="also serve answers to questions that mean the same")
    threshold: float | None = Field(None, ge=0, le=1, description="cosine similarity a semantic hit needs "
                                    "(cache.semantic_threshold when unset)")
    ttl_s: float | None = Field(None, gt=0, description="how long its entries live (cache.ttl_s when unset)")
    any_temperature: bool = Field(False, description="cache answers sampled at temperature > 0 (or unset) too")


class CacheConfig(_Strict):
    """The cache in front of admission (``shared.cache``): exact repeats for everyone, semantic matches per
    tenant x feature that opts in (``features``). Entries never cross tenants."""

    enabled: bool = True
    redis_url: str | None = Field(None, description="a Redis of its own for the cache (the gateway's when unset)")
    ttl_s: float = Field(3600.0, gt=0, le=30 * 86_400)
    max_entries_per_tenant: int = Field(10_000, gt=0, description="past it, the tenant's least recently used "
                                        "entries are evicted")
    max_answer_bytes: int = Field(256 * 1024, gt=0, description="a larger answer is not stored")
    scope: Literal["tenant", "feature"] = Field("tenant", description="whether a tenant's features share "
                                                "exact entries (semantic entries are always per feature)")
    semantic_threshold: float = Field(0.7, ge=0, le=1, description="the guard (shared.cache.guard) carries "
                                      "precision; this bar only keeps unrelated questions out of its way")
    max_semantic_entries: int = Field(2_000, gt=0, description="semantic entries kept per tenant x feature x "
                                      "model x context; the oldest go first")
    features: dict[str, dict[str, FeatureCacheConfig]] = Field(
        default_factory=dict, description="tenant -> feature -> its cache settings")

    @field_validator("features")
    @classmethod
    def _lowercase_features(cls, features: dict[str, dict[str, FeatureCacheConfig]]
                            ) -> dict[str, dict[str, FeatureCacheConfig]]:
        """Feature names are case-insensitive, as under ``tenants``."""
        return {tenant: {name.lower(): cfg for name, cfg in per.items()} for tenant, per in features.items()}

    def for_feature(self, tenant: str, feature: str) -> FeatureCacheConfig:
        return self.features.get(tenant, {}).get(feature) or _NO_FEATURE_CACHE

    def threshold(self, cfg: FeatureCacheConfig) -> float:
        return self.semantic_threshold if cfg.threshold is None else cfg.threshold

    def ttl(self, cfg: FeatureCacheConfig) -> float:
        return self.ttl_s if cfg.ttl_s is None else cfg.ttl_s


_NO_FEATURE_CACHE = FeatureCacheConfig()


class SimConfig(_Strict):
    """The provider simulator that `gateway up` starts when the providers point at it."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9100
    rpm: int = 600
    tpm: int = 200_000


def _sim_url(sim: SimConfig) -> str:
    """Where the gateway reaches the simulator it starts; a wildcard bind address means this machine."""
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(sim.host, sim.host)
    return f"http://[{host}]:{sim.port}" if ":" in host else f"http://{host}:{sim.port}"


def _default_providers(sim: SimConfig | None = None) -> dict[str, ProviderConfig]:
    """The simulator as an OpenAI and an Anthropic provider, wherever ``sim`` puts it."""
    base = _sim_url(sim or SimConfig())
    return {
        "sim-openai": ProviderConfig(kind="openai", base_url=f"{base}/v1"),
        "sim-anthropic": ProviderConfig(kind="anthropic", base_url=base),
    }


def _default_deployments() -> list[DeploymentConfig]:
    return [
        DeploymentConfig(
            name="gpt-4o-mini@sim", provider="sim-openai", model="gpt-4o-mini",
            limits=Limits(rpm=600, tpm=200_000),
        ),
        DeploymentConfig(
            name="claude-haiku@sim", provider="sim-anthropic", model="claude-haiku-4-5",
            limits=Limits(rpm=600, itpm=200_000, otpm=40_000),
        ),
    ]


def _default_models() -> dict[str, list[str]]:
    return {
        "gpt-4o-mini": ["gpt-4o-mini@sim", "claude-haiku@sim"],
        "claude-haiku-4-5": ["claude-haiku@sim", "gpt-4o-mini@sim"],
        "fast": ["gpt-4o-mini@sim", "claude-haiku@sim"],
    }


def _default_tenants() -> dict[str, TenantConfig]:
    return {"acme": TenantConfig(weight=1), "globex": TenantConfig(weight=1)}


class Settings(BaseSettings):
    """The whole configuration. Field order is the order a reader meets them in the YAML file."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", env_nested_delimiter="__", extra="forbid")

    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "sqlite:///./var/gateway.db"
    providers: dict[str, ProviderConfig] = Field(default_factory=_default_providers)
    deployments: list[DeploymentConfig] = Field(default_factory=_default_deployments)
    models: dict[str, list[str]] = Field(default_factory=_default_models)
    lanes: dict[Lane, LaneConfig] = Field(default_factory=_default_lanes)
    tenants: dict[str, TenantConfig] = Field(default_factory=_default_tenants)
    tenant_defaults: TenantConfig = Field(default_factory=TenantConfig,
                                          description="for tenants (created with `gateway tenants create`) "
                                                      "that the file does not list")
    api: ApiConfig = Field(default_factory=ApiConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    sim: SimConfig = Field(default_factory=SimConfig)
    key_prefix: str = "gw"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (init kwargs come from the YAML file).
        return (env_settings, init_settings)

    @field_validator("lanes", mode="before")
    @classmethod
    def _all_lanes(cls, lanes: Any) -> Any:
        """A lane named in the file overrides only the fields it sets; unnamed lanes keep defaults."""
        if not isinstance(lanes, dict):
            return lanes
        merged = {name: cfg.model_dump() for name, cfg in _default_lanes().items()}
        for name, cfg in lanes.items():
            override = cfg.model_dump(exclude_unset=True) if isinstance(cfg, BaseModel) else cfg
            merged[name] = {**merged.get(name, {}), **(override or {})} if isinstance(override, dict) else override
        return merged

    @model_validator(mode="after")
    def _default_providers_follow_the_simulator(self) -> Settings:
        """Moving ``sim.port`` (or ``sim.host``) moves the default providers with it."""
        if "providers" not in self.model_fields_set:
            self.providers = _default_providers(self.sim)
        return self

    @model_validator(mode="after")
    def _references_resolve(self) -> Settings:
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployments: duplicate names in {names}")
        for d in self.deployments:
            if d.provider not in self.providers:
                raise ValueError(
                    f"deployments[{d.name}].provider: unknown provider {d.provider!r}; "
                    f"known: {sorted(self.providers)}"
                )
        for model, chain in self.models.items():
            if not chain:
                raise ValueError(f"models.{model}: needs at least one deployment")
            for name in chain:
                if name not in names:
                    raise ValueError(f"models.{model}: unknown deployment {name!r}; known: {names}")
        return self

    @model_validator(mode="after")
    def _cache_features_exist(self) -> Settings:
        """A cache setting for a tenant or feature the file does not define is a typo, not a new feature."""
        for tenant, features in self.cache.features.items():
            if tenant not in self.tenants:
                raise ValueError(f"cache.features.{tenant}: unknown tenant {tenant!r}; known: {sorted(self.tenants)}")
            known = set(self.tenants[tenant].features) | {"default"}
            for feature in features:
                if feature.lower() not in known:
                    raise ValueError(f"cache.features.{tenant}.{feature}: unknown feature {feature!r} of tenant "
                                     f"{tenant!r}; its features: {sorted(known)}")
        return self

    def deployment(self, name: str) -> DeploymentConfig:
        for d in self.deployments:
            if d.name == name:
                return d
        raise KeyError(name)

    def tenant(self, name: str) -> TenantConfig:
        """The tenant's settings, or ``tenant_defaults`` for a tenant the file does not list."""
        return self.tenants.get(name) or self.tenant_defaults


def _on_this_machine(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_provider_keys(settings: Settings) -> list[str]:
    """What must stop a process that calls providers (api, worker, ``gateway up``) from starting.

    A provider without its key gets calls with a placeholder or an empty key, and its 401s would
    only show up as failed jobs. One beyond this machine is a problem to return; one on loopback
    (the simulator, a local vLLM) usually needs no key, so it only gets a warning.
    """
    problems = []
    for name, provider in settings.providers.items():
        where = f"provider {name!r} ({provider.base_url})"
        if not provider.api_key_env:
            problem = f"{where} has no api_key_env"
            fix = ("set it to the environment variable that holds the provider's API key (for a server that "
                   "takes none, to one that holds a placeholder)")
        elif not os.environ.get(provider.api_key_env):
            problem = f"{where}: its api_key_env {provider.api_key_env} is unset or empty"
            fix = f"set {provider.api_key_env} to the provider's API key"
        else:
            continue
        if _on_this_machine(provider.base_url):
            log.warning("%s: its calls go without an API key (allowed on this machine)", problem)
        else:
            problems.append(f"{problem}: {fix}")
    return problems


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """Follow a pydantic error location through the YAML node tree to a 1-based line number."""
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            return None
    return node.start_mark.line + 1 if node is not None else None


def _explain(exc: ValidationError, path: Path | None, root: yaml.Node | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(root, loc) if root is not None else None
        at = f" ({path}:{line})" if line else (f" ({path})" if path else "")
        lines.append(f"  {where}{at}: {err['msg']}")
    return "invalid gateway configuration:\n" + "\n".join(lines)


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the config file (``GATEWAY_CONFIG`` when no path is given)."""
    path = path or os.environ.get("GATEWAY_CONFIG") or None
    file_path = Path(path) if path else None
    data: dict[str, Any] = {}
    root = None
    if file_path:
        if not file_path.exists():
            raise ConfigError(f"config file {file_path} does not exist (set GATEWAY_CONFIG or --config)")
        text = file_path.read_text()
        try:
            root = yaml.compose(text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{file_path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{file_path}: the top level must be a mapping of settings")
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, file_path, root)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()
