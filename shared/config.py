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
import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

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
    """USD per million tokens; overrides genai-prices for a deployment (self-hosted, negotiated). Cache
    reads and writes cost the input price unless priced here."""

    input_per_mtok: float = Field(ge=0)
    output_per_mtok: float = Field(ge=0)
    cached_input_per_mtok: float | None = Field(None, ge=0)
    cache_write_per_mtok: float | None = Field(None, ge=0)


class CapabilityOverrides(_Strict):
    """What a deployment can serve, where the bundled model catalogue (``shared.capabilities``) is wrong or
    silent (self-hosted models, new models, a provider account without a feature). Unset: the catalogue's."""

    context_window: int | None = Field(None, gt=0, description="prompt + output tokens the model takes")
    max_output_tokens: int | None = Field(None, gt=0)
    tools: bool | None = None
    vision: bool | None = Field(None, description="image parts in messages")
    json_schema: bool | None = Field(None, description="response_format with a JSON schema")
    streaming: bool | None = None


class DeploymentConfig(_Strict):
    """One provider account x model: the unit that has limits, a breaker and a price."""

    name: str
    provider: str
    model: str
    limits: Limits = Field(default_factory=Limits)
    headroom: float = Field(0.95, gt=0, le=1, description="share of the provider's limit the gateway starts at, "
                            "and goes back to at least after a 429")
    headroom_max: float = Field(0.995, gt=0, le=1, description="the most headroom adapts up to while the provider's "
                                "headers agree with the mirror (set it to headroom to keep headroom fixed)")
    headroom_min: float = Field(0.8, gt=0, le=1, description="the least it backs off to when 429s go on")
    default_max_tokens: int = Field(1024, gt=0)
    burst_s: float = Field(60.0, gt=0, le=60, description="seconds of the per-minute limit allowed at once")
    max_context_tokens: int = Field(128_000, gt=0, description="the context window of a model the catalogue does "
                                    "not know (``capabilities.context_window`` overrides both)")
    price: Price | None = None
    capabilities: CapabilityOverrides = Field(default_factory=CapabilityOverrides)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    breaker: BreakerConfig = Field(default_factory=BreakerConfig)
    drop_unsupported: bool = Field(False, description="a request in the other dialect is sent without the fields "
                                   "this deployment's dialect cannot say, instead of skipping this deployment "
                                   "(``shared.dialects``)")


class LaneConfig(_Strict):
    """A priority lane: interactive has a reserved share, the others a ceiling.

    The interactive reserve is what other lanes must leave of every deployment bucket: what the
    interactive lane's recent arrivals need (``reserve_window_s`` of its arrival rate, plus its largest
    recent job), at least ``reserve_min`` and at most ``reserve`` of the bucket. The rest is lent."""

    reserve: float = Field(0.0, ge=0, le=1, description="the most of a deployment kept for interactive arrivals")
    reserve_min: float = Field(0.02, ge=0, le=1, description="the least kept, however quiet the interactive lane")
    reserve_window_s: float = Field(5.0, gt=0, le=600, description="seconds of the interactive lane's recent "
                                    "arrival rate kept for it")
    ceiling: float = Field(1.0, gt=0, le=1)
    deadline_s: float = Field(600.0, gt=0)
    max_queue_per_tenant: int = Field(100_000, gt=0)


def _default_lanes() -> dict[Lane, LaneConfig]:
    return {
        Lane.INTERACTIVE: LaneConfig(reserve=0.3, deadline_s=60),
        Lane.STANDARD: LaneConfig(deadline_s=900),
        Lane.BATCH: LaneConfig(deadline_s=86_400),
    }


# -- privacy: redaction, the injection screen and the audit log (``shared.privacy``, ``shared.db.audit``) --

Detector = Literal["email", "phone", "card", "iban", "national_id", "ip", "secret"]
Action = Literal["off", "mask", "tokenize", "block"]
ScreenMode = Literal["off", "flag", "block"]
NationalId = Literal["us.ssn", "es.dni", "it.codicefiscale", "fr.nir", "in.aadhaar"]
NATIONAL_IDS: tuple[NationalId, ...] = ("us.ssn", "es.dni", "it.codicefiscale", "fr.nir", "in.aadhaar")
# Values no product should send a provider: masked unless a tenant or feature says otherwise.
DEFAULT_REDACTION: dict[Detector, Action] = {"secret": "mask", "card": "mask"}


class CustomPattern(_Strict):
    """An operator's own detector: a regular expression and what to do with what it matches."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="the placeholder's type: [NAME] / [NAME_1]")
    pattern: str = Field(min_length=1, max_length=1000)
    action: Action = "mask"

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.match(""):
            raise ValueError("the pattern matches the empty string, so it would match everywhere")
        return pattern


class AuditPolicy(_Strict):
    """What a tenant's audit records keep of each call: ``hash`` (SHA-256 of the request and answer only),
    ``redacted`` (as the provider saw them: placeholders, never the values) or ``full`` (as the caller
    sent and got them, tokenized values put back; masked values are never kept anywhere); kept for
    ``content_days``, then purged (the hashes and the rest of the record stay)."""

    content: Literal["hash", "redacted", "full"] = "hash"
    content_days: float = Field(30.0, gt=0)


class FeaturePrivacy(_Strict):
    """A tenant's or a feature's privacy policy; what it leaves unset it inherits (feature < tenant < ``privacy``)."""

    redaction: dict[Detector, Action] = Field(default_factory=dict, description="per detector: off | mask | "
                                              "tokenize | block; detectors not named inherit")
    custom: list[CustomPattern] = Field(default_factory=list, description="added to the inherited ones; "
                                        "one with the same name replaces it")
    screen: ScreenMode | None = None


class TenantPrivacy(FeaturePrivacy):
    audit: AuditPolicy | None = None


class PrivacyConfig(_Strict):
    """The defaults every tenant and feature inherits (see ``shared.privacy``)."""

    redaction: dict[Detector, Action] = Field(default_factory=lambda: dict(DEFAULT_REDACTION))
    custom: list[CustomPattern] = Field(default_factory=list)
    screen: ScreenMode = "flag"
    screen_threshold: float = Field(0.5, gt=0, le=1, description="injection score from which a call is "
                                    "flagged or blocked")
    phone_region: str = Field("US", description="where a phone number written without +country is from")
    national_ids: list[NationalId] = Field(
        default_factory=lambda: list(NATIONAL_IDS), description="the national ID schemes the national_id "
        "detector knows (python-stdnum validates each)")
    audit: AuditPolicy = Field(default_factory=AuditPolicy)

    @field_validator("phone_region")
    @classmethod
    def _known_region(cls, region: str) -> str:
        import phonenumbers

        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {region!r}; use a two-letter country code such as US, GB, DE")
        return region.upper()


TASK_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class ModelAccess(_Strict):
    """Which deployments a tenant's (or a feature's) jobs may use; entries name deployments or models.

    ``allow`` pins them to the listed ones (null: any), ``deny`` forbids some. A route or a model's chain
    is filtered by both; a request left with nothing is a 403 naming the model."""

    allow: list[str] | None = None
    deny: list[str] = Field(default_factory=list)

    def permits(self, deployment: str, model: str) -> bool:
        if deployment in self.deny or model in self.deny:
            return False
        return self.allow is None or deployment in self.allow or model in self.allow
def _check_shares(shares: list[float] | None) -> list[float] | None:
    """Alert thresholds: shares of a budget in (0, 1], each once, in order."""
    if shares is None:
        return None
    if any(not 0 < share <= 1 for share in shares):
        raise ValueError(f"each share must be above 0 and at most 1, got {shares}")
    return sorted(set(shares))


class DollarBudget(_Strict):
    """What a tenant, a tenant's feature or a key may spend in USD per calendar day and month (in
    ``billing.timezone``). ``hard``: a call that could cross it is refused before it is sent (a batch
    job waits for the next window when its deadline allows); ``soft``: calls go on, alerts fire. Either
    way an alert fires once per share in ``alert_at`` (default ``billing.alert_at``) and window."""

    daily_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    monthly_usd: float | None = Field(None, gt=0, allow_inf_nan=False)
    enforce: Literal["hard", "soft"] = "hard"
    alert_at: list[float] | None = Field(None, description="shares of the budget at which an alert fires")

    @field_validator("alert_at")
    @classmethod
    def _shares(cls, shares: list[float] | None) -> list[float] | None:
        return _check_shares(shares)

    def limit(self, window: Literal["day", "month"]) -> float | None:
        return self.daily_usd if window == "day" else self.monthly_usd


class FeatureConfig(_Strict):
    lane: Lane | None = Field(None, description="the lane every job of the feature runs in, whatever it asks")
    hard_tpm: int | None = Field(None, gt=0)
    privacy: FeaturePrivacy = Field(default_factory=FeaturePrivacy)
    models: ModelAccess = Field(default_factory=ModelAccess)
    tasks: dict[str, list[str]] = Field(default_factory=dict, description="task -> tiers for this feature, "
                                        "cheapest first (overrides the tenant's and routing.tasks)")
    budget: DollarBudget | None = None


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
    privacy: TenantPrivacy = Field(default_factory=TenantPrivacy)
    models: ModelAccess = Field(default_factory=ModelAccess)
    tasks: dict[str, list[str]] = Field(default_factory=dict, description="task -> tiers for this tenant, "
                                        "cheapest first (overrides routing.tasks)")
    budget: DollarBudget | None = None

    @field_validator("features")
    @classmethod
    def _lowercase_names(cls, features: dict[str, FeatureConfig]) -> dict[str, FeatureConfig]:
        """Callers' feature names are case-insensitive (``shared.schemas.Feature``), so are these."""
        lowered = {name.lower(): cfg for name, cfg in features.items()}
        if len(lowered) != len(features):
            raise ValueError(f"feature names differ only in case: {sorted(features)}")
        return lowered


class FilesConfig(_Strict):
    """Where uploaded files (``POST /v1/files``) and batch output live (``shared.files``)."""

    dir: str = Field("./var/files", description="a directory, one folder per tenant")
    max_bytes: int = Field(512 * 1024 * 1024, gt=0, description="the largest upload; past it a 413")
    max_lines: int = Field(200_000, gt=0, description="lines per batch input file")
    expires_s: int = Field(30 * 86400, gt=0, description="how long a file is kept (uploads and batch output) "
                                                          "unless its expires_after says otherwise; then deleted")


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


class StreamingConfig(_Strict):
    """Streamed answers (``stream: true``): the per-job Redis Stream that relays them (``shared.job_stream``)."""

    keep_s: float = Field(600.0, gt=0, description="how long a finished job's stream is kept for "
                          "GET /v1/jobs/{id}/stream (then only the stored answer is)")
    max_frames: int = Field(20_000, ge=100, description="a job stream's length cap (XADD MAXLEN ~); a longer "
                            "answer keeps its latest frames, and a resume from before them gets the stored answer")
    buffer_frames: int = Field(512, ge=8, description="frames held in the api for one slow reader; past that it "
                               "catches up from the job's stream in Redis, never holding up the others")
    resume_grace_s: float = Field(5.0, ge=0, description="after a streaming caller disconnects, how long the "
                                  "provider call goes on for a resume (GET /v1/jobs/{id}/stream) before it is "
                                  "aborted and settled by what was produced")


class WorkerConfig(_Strict):
    """A Celery worker process. An LLM call is seconds to minutes of waiting on a socket, so calls in flight,
    not CPU, bound a process: each call has a thread of its own, blocked on its socket (no CPU while it
    waits, ~100 KiB of memory; ``ops/bench_capacity.py`` measures both)."""

    pool: Literal["threads", "gevent", "prefork", "solo"] = "threads"
    concurrency: int = Field(2048, gt=0, le=20_000, description="calls in flight per worker process: the threads "
                             "of its attempt pool, and of Celery's pool, which holds as many messages at once (and "
                             "takes no more from the broker); threads start as calls arrive, so an idle worker has few")


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
    dispatch_lease_s: float = Field(8.0, gt=0, description="how long a dispatch's lease lives without being "
                                    "extended: while its message waits in the broker the leading scheduler extends it "
                                    "every reconcile_every_s, and the worker that receives it keeps it; a message "
                                    "lost in between is sent again this long after")
    attempt_lease_s: float = Field(6.0, gt=0, description="how long a call's lease lives without a heartbeat: a "
                                   "worker or api killed mid-call is noticed this long after, whatever the call's "
                                   "length")
    heartbeat_s: float = Field(1.5, gt=0, description="how often a process renews the leases of all its calls in "
                               "flight (one round trip)")
    reconcile_every_s: float = Field(2.0, gt=0, description="how often recovery looks for lost and orphaned jobs")
    lease_margin_s: float = Field(30.0, gt=0, description="how long past its deployment's total timeout a call may "
                                  "keep its lease alive before it counts as stuck (then it is sent again)")

    @model_validator(mode="after")
    def _heartbeat_fits(self) -> AdmissionConfig:
        if self.heartbeat_s * 2 > self.attempt_lease_s:
            raise ValueError(f"heartbeat_s ({self.heartbeat_s}) must be at most half of attempt_lease_s "
                             f"({self.attempt_lease_s}), or a live call could lose its lease between two beats")
        return self


class SchedulerConfig(_Strict):
    leader_lease_s: float = Field(1.5, gt=0, description="the leader lease: a standby takes over this long after "
                                  "the leading scheduler dies; the leader renews it every third of it")


class RetentionConfig(_Strict):
    """How long finished jobs keep their content and their rows, in days after they finished; null: forever.

    A job's ``request`` and ``result`` are a tenant's prompts and answers: after ``job_content_days``
    they are dropped and the row keeps what billing needs (ids, tenant, feature, model, tokens, cost).
    After ``jobs_days`` the row goes too, with its attempts. At least a day, so the 24 h idempotency
    window still finds a repeated request to compare with.
    """

    job_content_days: float | None = Field(30.0, ge=1)
    jobs_days: float | None = Field(None, ge=1)
    usage_days: float | None = Field(400.0, ge=1, description="how long the usage rollups are kept; the usage "
                                     "API refuses windows that start further back")


class AlertWebhook(_Strict):
    """Where budget alerts are POSTed: JSON, signed with HMAC-SHA256 of ``<timestamp>.<body>`` under the
    secret in ``secret_env`` (header ``x-gateway-signature: t=<timestamp>,v1=<hex>``), retried with
    backoff up to ``attempts`` times."""

    url: str
    secret_env: str | None = None
    attempts: int = Field(5, ge=1, le=20)
    timeout_s: float = Field(5.0, gt=0)
    backoff_s: float = Field(1.0, gt=0, description="the first retry's wait; each next one doubles it")

    def secret(self) -> str:
        return os.environ.get(self.secret_env, "") if self.secret_env else ""


class BillingConfig(_Strict):
    """Calendar and alerts of the dollar budgets and the usage rollups."""

    timezone: str = Field("UTC", description="where a day and a month start: budget windows and the usage "
                                             "API's days")
    alert_at: list[float] = Field(default_factory=lambda: [0.5, 0.8, 1.0],
                                  description="shares of a budget at which an alert fires, once per window")
    webhook: AlertWebhook | None = None

    @field_validator("alert_at")
    @classmethod
    def _shares(cls, shares: list[float]) -> list[float]:
        return _check_shares(shares) or []

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r}; use an IANA name like UTC or Europe/Berlin") from None
        return name

    @cached_property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


Check = Literal["length", "json_schema", "refusal", "empty"]
CHECKS: tuple[Check, ...] = ("length", "json_schema", "refusal", "empty")


class CascadeConfig(_Strict):
    """An answer from a cheaper tier that fails one of ``checks`` sends the job up a tier, like a retry."""

    enabled: bool = True
    checks: list[Check] = Field(default_factory=lambda: list(CHECKS))


def _default_spill() -> dict[Lane, bool]:
    return {Lane.INTERACTIVE: True, Lane.STANDARD: True, Lane.BATCH: False}


class RoutingConfig(_Strict):
    """Routes by task (``shared.routing``): tiers of deployments, cheapest first, and the tasks that use them.

    A request with ``model: auto`` goes to the cheapest capable deployment of its task's first tier
    (or, without a task, of the tier the complexity scorer picks among ``auto``); a lane with ``spill``
    may go up a tier when that tier's budget cannot take it now; ``cascade`` sends an answer that fails
    a check up a tier.
    """

    tiers: dict[str, list[str]] = Field(default_factory=dict, description="tier -> deployments")
    tasks: dict[str, list[str]] = Field(default_factory=dict, description="task -> tiers, cheapest first")
    auto: list[str] | None = Field(None, description="the tiers of `model: auto` without a task, cheapest first "
                                   "(default: every tier, in the order listed)")
    auto_thresholds: list[float] | None = Field(None, description="complexity scores (0-1) at which `auto` starts "
                                                "one tier higher, one fewer than the auto tiers (default: evenly "
                                                "spaced)")
    spill: dict[Lane, bool] = Field(default_factory=_default_spill, description="per lane: may a job go up a tier "
                                    "when its tier cannot take it now (else it waits for its tier)")
    expected_output_tokens: int = Field(256, gt=0, description="the output a request without max_tokens is "
                                        "priced at when routes compare deployments")
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)

    @field_validator("spill", mode="before")
    @classmethod
    def _all_lanes(cls, spill: Any) -> Any:
        return {**_default_spill(), **spill} if isinstance(spill, dict) else spill

    @field_validator("tasks")
    @classmethod
    def _task_names(cls, tasks: dict[str, list[str]]) -> dict[str, list[str]]:
        return _checked_tasks(tasks)

    def auto_tiers(self) -> list[str]:
        return list(self.auto) if self.auto is not None else list(self.tiers)

    def thresholds(self) -> list[float]:
        """Where each auto tier after the first begins, on the scorer's 0-1 scale."""
        if self.auto_thresholds is not None:
            return list(self.auto_thresholds)
        n = len(self.auto_tiers())
        return [round(i / n, 3) for i in range(1, n)]


def _checked_tasks(tasks: dict[str, list[str]]) -> dict[str, list[str]]:
    """Task names are what callers send (lower case, like feature names); each names at least one tier."""
    for name, tiers in tasks.items():
        if not re.match(TASK_PATTERN, name):
            raise ValueError(f"task {name!r}: use lower-case letters, digits, '_', '.', '-' (at most 64)")
        if not tiers:
            raise ValueError(f"task {name!r}: needs at least one tier")
    return tasks


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
    """The demo tenants; their features are listed so metrics label them (an unlisted one is ``other``)."""
    features = {"copilot": FeatureConfig(), "summarizer": FeatureConfig()}
    return {"acme": TenantConfig(weight=1, features=features), "globex": TenantConfig(weight=1, features=features)}


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
    files: FilesConfig = Field(default_factory=FilesConfig)
    worker: WorkerConfig = Field(default_factory=WorkerConfig)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    retries: RetryConfig = Field(default_factory=RetryConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    billing: BillingConfig = Field(default_factory=BillingConfig)
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
    def _makes_sense(self) -> Settings:
        """What each field allows but the whole cannot run: every problem at once, one per line, each
        starting with the dotted path of its field (``_explain`` finds its line in the file)."""
        problems = [*_reference_problems(self), *_limit_problems(self), *_lane_problems(self),
                    *_routing_problems(self)]
        if problems:
            raise ValueError(f"{len(problems)} problem(s) in the configuration:\n" + "\n".join(problems))
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


def _reference_problems(s: Settings) -> list[str]:
    """Names that point nowhere: a deployment's provider, a model's deployments, duplicate deployments."""
    problems = []
    names = [d.name for d in s.deployments]
    for i, d in enumerate(s.deployments):
        if names.index(d.name) != i:
            first = names.index(d.name)
            problems.append(f"deployments.{i}.name: {d.name!r} is already the name of deployments.{first}")
        if d.provider not in s.providers:
            problems.append(f"deployments.{i}.provider: unknown provider {d.provider!r}; known: {sorted(s.providers)}")
    for model, chain in s.models.items():
        if not chain:
            problems.append(f"models.{model}: needs at least one deployment")
        for j, name in enumerate(chain):
            if name not in names:
                problems.append(f"models.{model}.{j}: unknown deployment {name!r}; known: {names}")
    return problems


def _limit_problems(s: Settings) -> list[str]:
    """Limits that cannot mean what was meant: a deployment with none (admission would send without
    bound), a headroom range upside down, a soft limit above its hard one (the soft one would never bind)."""
    problems = []
    for i, d in enumerate(s.deployments):
        if not any((d.limits.rpm, d.limits.tpm, d.limits.itpm, d.limits.otpm)):
            problems.append(f"deployments.{i}.limits: {d.name} has no limits: set the provider account's rpm and "
                            "tpm (or itpm and otpm), or the gateway sends to it without bound")
        if d.headroom_min > d.headroom_max:
            problems.append(f"deployments.{i}.headroom_min: {d.headroom_min} is above headroom_max ({d.headroom_max}); "
                            "the headroom adapts between them (set both to headroom to keep it fixed)")
    tenants = [(f"tenants.{name}", cfg) for name, cfg in s.tenants.items()] + [("tenant_defaults", s.tenant_defaults)]
    for where, cfg in tenants:
        if cfg.soft_tpm and cfg.hard_tpm and cfg.soft_tpm > cfg.hard_tpm:
            problems.append(f"{where}.soft_tpm: {cfg.soft_tpm} is above hard_tpm ({cfg.hard_tpm}); the soft limit "
                            "is the share a tenant gets before it borrows, so it must be at most the hard one")
    return problems


def _lane_problems(s: Settings) -> list[str]:
    """Shares that leave a lane nothing: the interactive reserve is what no other lane may take, and
    only the interactive lane has one."""
    problems = []
    reserve = s.lanes[Lane.INTERACTIVE].reserve
    for lane in (Lane.STANDARD, Lane.BATCH):
        share = min(s.lanes[lane].ceiling, 1 - reserve)
        if share <= 0:
            problems.append(f"lanes.interactive.reserve: {reserve} leaves the {lane} lane nothing (it may use at most "
                            f"min(its ceiling {s.lanes[lane].ceiling}, 1 - reserve) of a deployment)")
            break
        if s.lanes[lane].reserve:
            problems.append(f"lanes.{lane}.reserve: only the interactive lane has a reserve; use "
                            f"lanes.{lane}.ceiling to cap the {lane} lane")
    return problems


def _routing_problems(settings: Settings) -> list[str]:
    """Every tier names known deployments, every task known tiers; ``auto`` is the routing's model name."""
    routing = settings.routing
    names = [d.name for d in settings.deployments]
    problems = []
    if "auto" in settings.models or "auto" in names:
        problems.append("models.auto: 'auto' is the model name of routed requests; rename that model")
    for tier, chain in routing.tiers.items():
        unknown = [d for d in chain if d not in names]
        if not chain or unknown:
            problems.append(f"routing.tiers.{tier}: needs known deployments; unknown {unknown}, known: {names}")
    tiers = list(routing.tiers)
    places: list[tuple[str, dict[str, list[str]]]] = [("routing.tasks", routing.tasks)]
    places.append(("routing.auto", {"auto": routing.auto_tiers()}))
    for tenant, cfg in {**settings.tenants, "(tenant_defaults)": settings.tenant_defaults}.items():
        places.append((f"tenants.{tenant}.tasks", _checked_tasks(cfg.tasks)))
        places += [(f"tenants.{tenant}.features.{f}.tasks", _checked_tasks(fc.tasks)) for f, fc in cfg.features.items()]
    for where, tasks in places:
        for task, chain in tasks.items():
            unknown = [t for t in chain if t not in tiers]
            if unknown:
                problems.append(f"{where}.{task}: unknown tiers {unknown}; known: {tiers}")
    given = routing.auto_thresholds
    if given is not None and (len(given) != max(0, len(routing.auto_tiers()) - 1) or given != sorted(given)):
        problems.append(f"routing.auto_thresholds: needs {len(routing.auto_tiers()) - 1} ascending scores (one "
                        f"fewer than the auto tiers {routing.auto_tiers()}), got {given}")
    return problems


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


def _env_variable(loc: tuple[Any, ...], environ: dict[str, str] | None = None) -> str | None:
    """The ``GATEWAY_*`` variable that set the value at ``loc`` (or a section holding it), if one did."""
    names = {name.upper(): name for name in (os.environ if environ is None else environ)}
    for end in range(len(loc), 0, -1):
        candidate = "GATEWAY_" + "__".join(str(part) for part in loc[:end]).upper()
        if candidate in names:
            return names[candidate]
    return None


def _source(loc: tuple[Any, ...], path: Path | None, root: yaml.Node | None) -> str:
    """Where a value came from: the variable that overrides it, else its line in the file."""
    variable = _env_variable(loc)
    if variable:
        return f" (from the environment variable {variable})"
    line = None
    for end in range(len(loc), 0, -1):  # a field the file does not set: the line of the part that holds it
        line = _line_of(root, loc[:end]) if root is not None else None
        if line:
            break
    return f" ({path}:{line})" if line else (f" ({path})" if path else "")


def _loc_of(dotted: str) -> tuple[Any, ...]:
    return tuple(int(part) if part.isdigit() else part for part in dotted.split("."))


def _explain(exc: ValidationError, path: Path | None, root: yaml.Node | None) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        message = str(err["msg"])
        if not loc and err["type"] == "value_error" and "\n" in message:  # Settings._makes_sense: one per line
            for problem in message.split("\n")[1:]:
                where, _, what = problem.partition(": ")
                lines.append(f"  {where}{_source(_loc_of(where), path, root)}: {what}")
            continue
        where = ".".join(str(p) for p in loc) or "(top level)"
        lines.append(f"  {where}{_source(loc, path, root)}: {message}")
    return "invalid gateway configuration:\n" + "\n".join(lines)


def _explain_environment(exc: SettingsError) -> str:
    """A ``GATEWAY_*`` value that is not even JSON where a section or list is expected."""
    field = re.search(r'field "([^"]+)"', str(exc))
    variable = _env_variable((field.group(1),)) if field else None
    name = variable or "a GATEWAY_* variable"
    return (f"invalid gateway configuration:\n  {field.group(1) if field else '(environment)'} (from the environment "
            f"variable {name}): not valid JSON for this setting ({exc.__cause__ or exc})")


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
    except SettingsError as exc:
        raise ConfigError(_explain_environment(exc)) from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once."""
    return load_settings()
