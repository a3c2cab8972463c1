"""What callers get back, as pydantic models for the OpenAPI document (``api.openapi``).

Only the document uses them: routes return prepared dicts rendered by orjson (``api.responses``), since
validating every answer would cost CPU on the hot path. They describe those dicts (``shared.db.jobs.job_view``,
``api.errors.error_body``, ``shared.translate``) and ``tests/e2e/test_openapi.py`` holds them to it
against a real stack. Provider answers are the provider's: those models allow extra fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.lanes import Lane

JobStatus = Literal["queued", "admitted", "running", "succeeded", "failed", "cancelled", "expired"]


class _Open(BaseModel):
    """A provider's (or a translation's) object: these fields, and whatever else it sends."""

    model_config = ConfigDict(extra="allow")


# -- errors ---------------------------------------------------------------------------------------


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="what went wrong and what to change")
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")
    param: str | None = Field(description="the field or parameter at fault, as jobs.3.messages")
    code: str | None = Field(description="a stable code: model_not_found, job_too_large, queue_full, ...")


class OpenAIError(BaseModel):
    """Every error outside ``/v1/messages``, in OpenAI's shape."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, authentication_error, rate_limit_error, ...")
    message: str


class AnthropicError(BaseModel):
    """Every error of ``/v1/messages``, in Anthropic's shape."""

    type: Literal["error"]
    error: AnthropicErrorDetail


# -- OpenAI chat completion -----------------------------------------------------------------------


class ChatCompletionMessage(_Open):
    role: str
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatCompletionChoice(_Open):
    index: int = 0
    message: ChatCompletionMessage
    finish_reason: str | None = None


class ChatCompletion(_Open):
    """OpenAI's ``chat.completion``, as the provider (or the translation from Anthropic) answered. The
    gateway checks that it has a choice with a message; the rest is the provider's."""

    id: str | None = None
    object: str = Field("chat.completion")
    created: int | None = None
    model: str | None = None
    choices: list[ChatCompletionChoice] = Field(min_length=1)
    usage: dict[str, Any] | None = None


# -- Anthropic message ----------------------------------------------------------------------------


class AnthropicUsage(_Open):
    input_tokens: int
    output_tokens: int


class AnthropicMessage(BaseModel):
    """Anthropic's Messages answer: as an Anthropic deployment gave it, or translated from an OpenAI one's."""

    id: str
    type: Literal["message"]
    role: Literal["assistant"]
    model: str
    content: list[dict[str, Any]] = Field(description="text, tool_use and (extended thinking) thinking blocks")
    stop_reason: str | None
    stop_sequence: str | None
    usage: AnthropicUsage


# -- jobs -----------------------------------------------------------------------------------------


class JobUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class JobError(_Open):
    type: str = Field(description="why the job ended without a result: bad_request, timeout, deadline_exceeded, ...")
    message: str


class JobRoute(BaseModel):
    """How a job with model `auto` was routed (``shared.db.jobs.route_view``)."""

    task: str | None = Field(description="the task it was routed by; null: by the complexity scorer")
    tier: str = Field(description="the tier of the deployment that answered (before that, the first tier it tries)")
    start_tier: str
    tiers: list[str] = Field(description="the route's tiers from where it started, cheapest first")
    reason: str = Field(description="why it started at that tier")
    escalations: int = Field(description="answers that failed a check (length, JSON schema, refusal, empty) and "
                                         "sent the job up a tier")
    ceiling_deployment: str = Field(description="the route's most expensive tier's deployment")
    ceiling_cost_usd: float | None = Field(description="the answer's usage priced at ceiling_deployment")
    saving_usd: float | None = Field(description="ceiling_cost_usd less what the job cost (every attempt)")


class Embedding(_Open):
    object: str = Field("embedding")
    index: int
    embedding: list[float] | str = Field(description="floats, or base64 of little-endian float32s")


class EmbeddingList(_Open):
    """OpenAI's embeddings answer, as the provider gave it."""

    object: str = Field("list")
    data: list[Embedding]
    model: str | None = None
    usage: dict[str, Any] | None = None


class TextCompletion(_Open):
    """OpenAI's legacy ``text_completion``, as the provider gave it."""

    id: str | None = None
    object: str = Field("text_completion")
    model: str | None = None
    choices: list[dict[str, Any]] = Field(min_length=1)
    usage: dict[str, Any] | None = None


class ResponseObject(_Open):
    """OpenAI's Responses ``response`` (``shared.responses_api.from_chat``)."""

    id: str
    object: Literal["response"]
    status: Literal["completed", "incomplete"]
    model: str | None = None
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class TokenCount(BaseModel):
    input_tokens: int = Field(description="the prompt's tokens, as the gateway's estimator counts them")


class JobView(BaseModel):
    """A job as the native API shows it (``shared.db.jobs.job_view``); times are Unix seconds."""

    id: str
    object: Literal["gateway.job"]
    status: JobStatus
    tenant: str
    feature: str
    priority: Lane
    task: str | None
    model: str
    model_used: str | None
    deployment: str | None
    idempotency_key: str | None
    created_at: int
    admitted_at: int | None
    finished_at: int | None
    deadline: int
    queued_ms: int | None
    usage: JobUsage
    cost_usd: float
    cache_status: Literal["hit", "semantic", "miss", "bypass"] = Field(
        description="hit: an exact repeat answered from the cache; semantic: a question that means the same; "
                    "miss: asked, not found; bypass: not asked (no-cache/no-store, sampling, a batch, off)")
    cache_source_job: str | None = Field(description="on a hit: the job whose answer was served")
    cache_similarity: float | None = Field(description="on a semantic hit: the questions' cosine similarity")
    saved_usd: float = Field(description="on a hit: what the answer cost when it was paid for (this job costs 0)")
    attempts: int
    result: ChatCompletion | AnthropicMessage | EmbeddingList | TextCompletion | None = Field(
        description="the answer once succeeded (a chat completion; an Anthropic message for a /v1/messages job an "
                    "Anthropic deployment answered; embeddings or a text completion for those routes' jobs); null "
                    "after retention drops it")
    error: JobError | None
    route: JobRoute | None = Field(description="model `auto` only: the route taken")


class JobPage(BaseModel):
    """``GET /v1/jobs``: newest first; pass ``next_cursor`` as ``cursor`` for the next page."""

    object: Literal["list"]
    data: list[JobView]
    has_more: bool
    next_cursor: str | None


class JobBatch(BaseModel):
    """``POST /v1/jobs/batch``: one job per item, in the order sent."""

    object: Literal["list"]
    data: list[JobView]


# -- Message Batches ------------------------------------------------------------------------------


class MessageBatchCounts(BaseModel):
    """How many of the batch's requests are in each state; they add up to its number of requests."""

    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(BaseModel):
    """Anthropic's MessageBatch (``/v1/messages/batches``); times are RFC 3339."""

    id: str = Field(description="msgbatch_...")
    type: Literal["message_batch"]
    processing_status: Literal["in_progress", "canceling", "ended"]
    request_counts: MessageBatchCounts
    created_at: str
    expires_at: str = Field(description="24 hours after creation: requests not done by then end expired")
    ended_at: str | None
    cancel_initiated_at: str | None
    archived_at: str | None
    results_url: str | None = Field(description="once ended: the results, one JSON line per request")


class MessageBatchList(BaseModel):
    """Newest first; ``after_id`` (``last_id``) pages on, ``before_id`` (``first_id``) back."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None
    last_id: str | None


# -- models, health, operators --------------------------------------------------------------------


class ModelCard(BaseModel):
    id: str = Field(description="a model name from the config, or a deployment's name")
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(description="redis and database: 'ok' or the error")


class BucketScope(BaseModel):
    """What a bucket limits (``shared.budget.Scope``); fields that do not apply are empty."""

    level: Literal["deployment", "lane", "tenant", "feature"]
    deployment: str
    axis: str = Field(description="rpm, tpm, itpm or otpm on deployment and lane buckets")
    lane: str
    tenant: str
    feature: str
    limit: str = Field(description="hard or soft on tenant and feature buckets")


class BucketLevel(BaseModel):
    key: str
    scope: BucketScope
    level: float
    capacity: float = Field(description="at the configured headroom, for a deployment bucket")
    rate_per_s: float
    headroom: float | None = Field(None, description="a deployment bucket's headroom now: the configured one "
                                   "until the provider's headers move it (README: spending the whole account)")
    borrowable: bool
    reservations: int
    reserved: float


class LaneQueue(BaseModel):
    waiting: int
    tokens: float
    tenants: dict[str, int] = Field(description="jobs waiting per tenant")


class SchedulerState(BaseModel):
    leader: str | None


class CachePurged(BaseModel):
    """``DELETE /v1/admin/cache``: what was deleted."""

    tenant: str
    feature: str | None
    exact: int = Field(description="exact entries deleted")
    semantic_scopes: int = Field(description="semantic scopes (model x context) deleted")


class Budgets(BaseModel):
    """``GET /v1/admin/budgets``: live bucket levels, queues per lane, breakers and the scheduler's leader."""

    buckets: list[BucketLevel]
    queues: dict[Lane, LaneQueue]
    breakers: dict[str, dict[str, Any]] = Field(description="per deployment: state, calls, failures, ...")
    scheduler: SchedulerState


# -- the audit log ----------------------------------------------------------------------------------


class AuditRecord(BaseModel):
    """One call or admin action (``shared.db.audit``); ``seq``/``prev_hash``/``hash`` are null until the
    record is sealed into its tenant's chain (seconds after it was written)."""

    id: int
    at: str = Field(description="when, ISO 8601 UTC")
    tenant_id: str
    kind: Literal["call", "admin"]
    action: str = Field(description="call.succeeded, call.failed, call.rejected, key.create, tenant.disable, ...")
    actor: str | None = Field(description="key:<id> for a call, cli:<user> for an admin action")
    key_id: int | None
    job_id: str | None
    feature: str | None
    lane: str | None
    model: str | None = Field(description="the model asked for")
    model_used: str | None
    deployment: str | None
    decision: dict[str, Any] | None = Field(description="route, who sent it, attempts, outcome; or why it was refused")
    redactions: dict[str, Any] | None = Field(description="values replaced, by detector")
    screen: dict[str, Any] | None = Field(description="the injection screen's verdict, score and signals")
    tokens_in: int
    tokens_out: int
    cost_usd: float
    content_mode: Literal["hash", "redacted", "full"]
    request_sha256: str | None
    response_sha256: str | None
    request: dict[str, Any] | None = Field(description="per content_mode; null after its retention")
    response: dict[str, Any] | None
    content_until: str | None
    seq: int | None
    prev_hash: str | None
    hash: str | None


class AuditPage(BaseModel):
    """Audit records, oldest first; ``next_cursor`` continues after the last one."""

    object: Literal["list"]
    data: list[AuditRecord]
    next_cursor: str | None


# -- the operators' overview (the console) ---------------------------------------------------------


class WaitingQueue(BaseModel):
    """One lane x tenant waiting queue that holds jobs."""

    lane: Lane
    tenant: str
    waiting: int
    oldest_age_s: float | None = Field(description="how long its oldest job has waited; null if unreadable")


class LaneSummary(LaneQueue):
    deadline_s: float = Field(description="the lane's default deadline: a queue age near it means jobs expire")


class Processes(BaseModel):
    """Workers and schedulers that beat in the last 20 s, as host:pid."""

    worker: list[str]
    scheduler: list[str]


class FailuresPerMinute(BaseModel):
    """Failed attempts of the last complete minute and of this one, by what failed and what followed:
    ``status:<kind>`` (``status:rate_limit`` is a provider's 429) and ``retry:<decision>``, per deployment."""

    previous: dict[str, dict[str, int]]
    current: dict[str, dict[str, int]]


class CostRow(BaseModel):
    """One tenant x feature's jobs created today (UTC)."""

    tenant: str
    feature: str
    jobs: int
    cost_usd: float
    tokens_in: int
    tokens_out: int
    cache_hits: int


class Overview(BaseModel):
    """``GET /v1/admin/overview``: what the console shows, read live."""

    at: float = Field(description="Unix time of the reading")
    queues: list[WaitingQueue]
    lanes: dict[Lane, LaneSummary]
    buckets: list[BucketLevel]
    breakers: dict[str, dict[str, Any]] = Field(description="per deployment: state, calls, failures, ...")
    scheduler: SchedulerState
    processes: Processes
    failures_per_minute: FailuresPerMinute
    cost_today: list[CostRow]
    cache_hit_rate: float | None = Field(description="share of today's jobs answered from the cache")


class AdminJobList(BaseModel):
    """``GET /v1/admin/jobs``: the newest jobs of every tenant, ``result`` left out (null)."""

    object: Literal["list"]
    data: list[JobView]


class AttemptView(BaseModel):
    number: int
    deployment: str
    status: str
    http_status: int | None
    error: str | None = Field(description="the failure as the provider said it (operators only)")
    latency_ms: int | None
    tokens_in: int
    tokens_out: int
    cost_usd: float
    started_at: float | None
    finished_at: float | None


class AdminJob(JobView):
    """Any tenant's job with its attempts."""

    attempt_list: list[AttemptView]
# -- usage ----------------------------------------------------------------------------------------


class UsageMeasures(BaseModel):
    requests: int = Field(description="jobs an attempt here ended (succeeded or failed for good)")
    succeeded: int
    attempts: int
    failed_attempts: int
    input_tokens: int = Field(description="prompt tokens, cache reads and writes included")
    cached_tokens: int = Field(description="prompt tokens read from the provider's cache")
    cache_write_tokens: int = Field(description="prompt tokens written to the provider's cache")
    output_tokens: int = Field(description="completion tokens, reasoning included")
    reasoning_tokens: int
    cost_usd: float = Field(description="what the attempts cost: the provider's usage at the deployment's price")
    failed_cost_usd: float = Field(description="the part of cost_usd that failed attempts cost")
    cache_savings_usd: float = Field(description="every input token at the input price, less the cost (negative "
                                                 "while cache writes outweigh reads)")
    routing_savings_usd: float = Field(description="the same usage at the model's first deployment, less the cost, "
                                                   "for attempts another deployment served")


class UsageRow(UsageMeasures):
    start: str = Field(description="the bucket's start, ISO 8601 in the report's time zone")
    end: str
    tenant: str | None = None
    feature: str | None = None
    model: str | None = None
    deployment: str | None = None
    key: str | None = Field(None, description="the key's public id; null for jobs no key is recorded for")


class UsageReport(BaseModel):
    """``GET /v1/usage``: one row per bucket and group, oldest first, and the window's totals."""

    model_config = ConfigDict(populate_by_name=True)

    object: Literal["usage"]
    from_: str = Field(alias="from", description="the window's start, rounded down to its bucket")
    to: str
    granularity: Literal["hour", "day"]
    timezone: str = Field(description="billing.timezone: where days start")
    group_by: list[str]
    tenant: str | None
    data: list[UsageRow]
    totals: UsageMeasures


# -- management -----------------------------------------------------------------------------------


class TenantView(BaseModel):
    """A tenant: its settings in force (the config file's, with what the management API set over them)."""

    id: str
    object: Literal["gateway.tenant"]
    name: str
    disabled: bool
    created_at: str | None
    updated_at: str | None
    settings: dict[str, Any] = Field(description="in force: weight, soft_tpm, hard_tpm, max_lane, budget, features ...")
    overrides: dict[str, Any] = Field(description="what the management API set over the config file")
    active_keys: int


class TenantList(BaseModel):
    object: Literal["list"]
    data: list[TenantView]


class KeyView(BaseModel):
    """An API key (never its secret): its limits, dollar budget, expiry, and the models and features it may use."""

    id: str = Field(description="the key's public id, key_...")
    object: Literal["gateway.key"]
    tenant: str
    name: str
    prefix: str = Field(description="the secret's first characters, to recognise it by")
    status: Literal["active", "expired", "revoked"]
    max_lane: Lane | None
    rpm: int | None
    tpm: int | None
    budget: dict[str, Any] | None
    expires_at: str | None
    allowed_models: list[str] | None
    allowed_features: list[str] | None
    created_at: str | None
    updated_at: str | None
    revoked_at: str | None


class KeyCreated(KeyView):
    """A key with its secret, shown this once (``POST /v1/admin/keys``, ``.../rotate``)."""

    key: str = Field(description="the secret: send it as 'Authorization: Bearer <key>'; it is not shown again")


class KeyList(BaseModel):
    object: Literal["list"]
    data: list[KeyView]


class AdminActionView(BaseModel):
    id: int
    at: str | None
    actor: str = Field(description="who: the X-Gateway-Operator header, or the CLI user")
    via: str = Field(description="how: 'api <address>' or 'cli <user>@<host>'")
    action: str = Field(description="tenant.create, tenant.update, key.rotate, ...")
    target: str = Field(description="tenant:<id> or key:<id>")
    details: dict[str, Any] | None


class AdminActionList(BaseModel):
    object: Literal["list"]
    data: list[AdminActionView]
