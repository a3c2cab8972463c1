"""The durable truth of the gateway: tenants, hashed API keys, jobs, their attempts, the usage rollups the
usage API reads, and the operators' actions.

Typed SQLAlchemy 2 models that run unchanged on SQLite (embedded default) and PostgreSQL
(production). Every datetime is timezone-aware UTC on the way in and out, whatever the backend.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from shared.db.ids import new_job_id
from shared.lanes import LANE_NAMES

STATUSES = ("queued", "admitted", "running", "succeeded", "failed", "cancelled", "expired")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled", "expired"})
ATTEMPT_STATUSES = ("running", "succeeded", "failed", "timeout", "rate_limited", "escalated")
UNPURGED = "finished_at IS NOT NULL AND request IS NOT NULL"  # a finished job whose content retention keeps
AUDIT_CONTENT_KEPT = "request IS NOT NULL OR response IS NOT NULL"  # an audit record whose content is still there

# Explicit constraint names: SQLite batch migrations and PostgreSQL both need stable names.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_key_public_id() -> str:
    """How the management API names a key: random, so a path cannot be guessed from another key's."""
    return "key_" + secrets.token_hex(8)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always aware UTC: SQLite forgets the zone, PostgreSQL answers in its own."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: the store only accepts timezone-aware values")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONDoc = JSON().with_variant(JSONB(), "postgresql")
Money = Numeric(18, 8, asdecimal=False)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONDoc}


class Tenant(Base):
    """A customer of the gateway; the API key decides it, never a request field."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # What the management API set (weight, limits, budgets ...), over the config file's tenant settings.
    settings: Mapped[dict[str, Any] | None]
    updated_at: Mapped[datetime | None]

    keys: Mapped[list[ApiKey]] = relationship(back_populates="tenant")


class ApiKey(Base):
    """A tenant's API key, stored only as its SHA-256 hash; the plaintext is shown once at creation.

    SHA-256 (not bcrypt/argon2) is right here because keys are 256-bit random tokens, not
    passwords: brute force over that space is hopeless with any hash, while a slow hash would add
    milliseconds to every request. A plain digest also lets authentication be one indexed lookup.
    """

    __tablename__ = "api_keys"
    __table_args__ = (CheckConstraint(f"max_lane IS NULL OR max_lane IN {LANE_NAMES!r}", name="max_lane"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="default")
    prefix: Mapped[str] = mapped_column(String(12))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]
    max_lane: Mapped[str | None] = mapped_column(String(20))  # the highest lane it may use; None: the tenant's
    models: Mapped[dict[str, Any] | None]  # {"allow": [...] | null, "deny": [...]}: what its jobs may use
    # How the management API and the usage API name it (random: no key's name tells another's).
    public_id: Mapped[str] = mapped_column(String(32), unique=True, index=True, default=new_key_public_id)
    rpm: Mapped[int | None]  # the key's own limits, under its tenant's
    tpm: Mapped[int | None]
    budget: Mapped[dict[str, Any] | None]  # a DollarBudget
    expires_at: Mapped[datetime | None]
    allowed_models: Mapped[list[str] | None] = mapped_column(JSONDoc)  # None: any
    allowed_features: Mapped[list[str] | None] = mapped_column(JSONDoc)
    updated_at: Mapped[datetime | None]

    tenant: Mapped[Tenant] = relationship(back_populates="keys")


class Job(Base):
    """One request's life from acceptance to a terminal status; the SQL row outlives Redis."""

    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("tenant_id", "idempotency_key"),
        Index(None, "tenant_id", "id"),  # tenant listing, newest first
        Index(None, "tenant_id", "status", "id"),  # tenant listing filtered by status
        Index(None, "status", "deadline"),  # shedding queued jobs past their deadline
        Index(None, "key_id", "status"),  # cancelling what a revoked key queued
        Index(None, "batch_id", "status"),  # a batch's counts, output and cancel
        Index("ix_jobs_finished_at_unpurged", "finished_at",  # retention: finished jobs that still hold content
              sqlite_where=text(UNPURGED), postgresql_where=text(UNPURGED)),
        CheckConstraint(f"status IN {STATUSES!r}", name="status"),
        CheckConstraint(f"lane IN {LANE_NAMES!r}", name="lane"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True, default=new_job_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key_id: Mapped[int | None]  # the API key that submitted it (no foreign key: jobs outlive keys)
    feature: Mapped[str] = mapped_column(String(100), default="default")
    lane: Mapped[str] = mapped_column(String(20), default="standard")
    task: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    request: Mapped[dict[str, Any] | None]  # NULL once retention purged a finished job's content
    screening: Mapped[dict[str, Any] | None]  # redaction counts and the injection verdict at acceptance
    result: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    deadline: Mapped[datetime]
    estimate_tokens: Mapped[int | None]
    deployment: Mapped[str | None] = mapped_column(String(200))
    model_used: Mapped[str | None] = mapped_column(String(200))
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(Money, default=0.0)
    cache_status: Mapped[str] = mapped_column(String(20), default="miss")  # hit, semantic, miss or bypass
    cache_source_job: Mapped[str | None] = mapped_column(String(30))  # a hit: the job whose answer it served
    cache_similarity: Mapped[float | None] = mapped_column(Float)  # a semantic hit: how close the questions were
    saved_usd: Mapped[float] = mapped_column(Money, default=0.0)  # a hit: what the answer cost when it was paid for
    queued_ms: Mapped[int | None]
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    admitted_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    route: Mapped[dict[str, Any] | None]  # model auto: the route taken (``shared.routing.RouteSpec``)
    escalations: Mapped[int] = mapped_column(default=0, server_default=text("0"))  # answers that failed a check
    route_ceiling_usd: Mapped[float | None] = mapped_column(Money)  # the answer priced at the route's top tier
    saving_usd: Mapped[float | None] = mapped_column(Money)  # route_ceiling_usd less what the job cost
    # The format ``request`` is written in (``shared.dialects``): openai or anthropic, as the caller sent it.
    dialect: Mapped[str] = mapped_column(String(20), default="openai", server_default="openai")
    batch_id: Mapped[str | None] = mapped_column(String(40))  # a line of this batch (``POST /v1/batches``)
    custom_id: Mapped[str | None] = mapped_column(String(200))  # that line's custom_id
    stream: Mapped[dict[str, Any] | None]  # how it streams to its caller (``JobSpec.stream``); NULL: it does not


class Attempt(Base):
    """One call of a job to one deployment; (job_id, number) is unique so a redelivery cannot bill twice."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number"),)  # also serves lookups by job_id

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    number: Mapped[int]
    deployment: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20), default="running")
    http_status: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None]
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(Money, default=0.0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # What the usage rollups are made of (``shared.db.usage``), so they can be checked against it.
    model: Mapped[str | None] = mapped_column(String(200))  # the deployment's model, as priced
    cached_tokens: Mapped[int] = mapped_column(default=0)
    cache_write_tokens: Mapped[int] = mapped_column(default=0)
    reasoning_tokens: Mapped[int] = mapped_column(default=0)
    cache_savings_usd: Mapped[float] = mapped_column(Money, default=0.0)
    routing_savings_usd: Mapped[float] = mapped_column(Money, default=0.0)
    ended_job: Mapped[bool] = mapped_column(default=False)  # its outcome was the job's


class AuditEvent(Base):
    """One call or admin action, appended once and never changed but twice: sealed into its tenant's
    hash chain (``seq``, ``prev_hash``, ``hash``, by the leading scheduler) and, past its retention,
    its ``request``/``response`` content purged (their SHA-256 stays, and the chain covers only it).
    See ``shared.db.audit``."""

    __tablename__ = "audit_events"
    __table_args__ = (
        UniqueConstraint("tenant_id", "seq"),  # one chain per tenant; also its order
        Index(None, "tenant_id", "at"),  # queries by tenant and time
        Index("ix_audit_events_unsealed", "id", sqlite_where=text("seq IS NULL"),
              postgresql_where=text("seq IS NULL")),
        Index("ix_audit_events_content_until", "content_until", sqlite_where=text(AUDIT_CONTENT_KEPT),
              postgresql_where=text(AUDIT_CONTENT_KEPT)),
        CheckConstraint("kind IN ('call', 'admin')", name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    tenant_id: Mapped[str] = mapped_column(String(63))  # no foreign key: the log outlives what it is about
    kind: Mapped[str] = mapped_column(String(10))
    action: Mapped[str] = mapped_column(String(40))  # call.succeeded, call.failed, call.rejected, key.create, ...
    actor: Mapped[str | None] = mapped_column(String(200))  # who: "key:<id>", "cli:<user>"
    key_id: Mapped[int | None]
    job_id: Mapped[str | None] = mapped_column(String(30))
    feature: Mapped[str | None] = mapped_column(String(100))
    lane: Mapped[str | None] = mapped_column(String(20))
    model: Mapped[str | None] = mapped_column(String(200))
    model_used: Mapped[str | None] = mapped_column(String(200))
    deployment: Mapped[str | None] = mapped_column(String(200))
    decision: Mapped[dict[str, Any] | None]  # how the call went: route, admission, attempts, outcome or refusal
    redactions: Mapped[dict[str, Any] | None]  # values replaced, by detector
    screen: Mapped[dict[str, Any] | None]  # the injection screen's verdict, score and signals
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(Money, default=0.0)
    content_mode: Mapped[str] = mapped_column(String(10), default="hash")
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    response_sha256: Mapped[str | None] = mapped_column(String(64))
    request: Mapped[dict[str, Any] | None]
    response: Mapped[dict[str, Any] | None]
    content_until: Mapped[datetime | None]  # the content is purged after this
    seq: Mapped[int | None]
    prev_hash: Mapped[str | None] = mapped_column(String(64))
    hash: Mapped[str | None] = mapped_column(String(64))


GRANULARITIES = ("h", "d")


class UsageRollup(Base):
    """Usage and cost per hour (``h``, UTC hours) and per day (``d``, days in ``billing.timezone``) by
    tenant, feature, model, deployment and key, kept up to date in the transaction that records each
    attempt (``shared.db.usage``). ``key_id`` 0: no key (jobs from before keys were recorded)."""

    __tablename__ = "usage_rollups"
    __table_args__ = (
        PrimaryKeyConstraint("granularity", "bucket_start", "tenant_id", "feature", "model", "deployment", "key_id"),
        Index(None, "granularity", "tenant_id", "bucket_start"),  # a tenant's own usage
        CheckConstraint(f"granularity IN {GRANULARITIES!r}", name="granularity"),
    )

    granularity: Mapped[str] = mapped_column(String(1))
    bucket_start: Mapped[datetime]
    tenant_id: Mapped[str] = mapped_column(String(63))
    feature: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    deployment: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[int] = mapped_column(Integer)
    requests: Mapped[int] = mapped_column(BigInteger, default=0)  # jobs an attempt here ended
    succeeded: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    failed_attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # cache reads and writes included
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cache_write_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0)  # reasoning included
    reasoning_tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    cost_usd: Mapped[float] = mapped_column(Money, default=0.0)  # every attempt's, failed ones included
    failed_cost_usd: Mapped[float] = mapped_column(Money, default=0.0)
    cache_savings_usd: Mapped[float] = mapped_column(Money, default=0.0)
    routing_savings_usd: Mapped[float] = mapped_column(Money, default=0.0)


BATCH_STATUSES = ("validating", "in_progress", "completed", "cancelling", "cancelled", "expired", "failed")


class Batch(Base):
    """A batch: OpenAI's (``POST /v1/batches``) or, with ``endpoint`` /v1/messages, Anthropic's Message Batch
    (``api.message_batches``); its lines are jobs (``Job.batch_id``) in the batch lane."""

    __tablename__ = "batches"
    __table_args__ = (Index(None, "tenant_id", "id"), Index(None, "status", "ingested_at"),
                      CheckConstraint(f"status IN {BATCH_STATUSES!r}", name="status"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    endpoint: Mapped[str] = mapped_column(String(100))
    input_file_id: Mapped[str] = mapped_column(String(40))
    completion_window: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    lines: Mapped[int] = mapped_column(default=0)  # every line of the input file
    invalid: Mapped[int] = mapped_column(default=0)  # lines refused before they became jobs
    expired: Mapped[int] = mapped_column(default=0)  # of those, refused as the completion window was out of reach
    invalid_file: Mapped[str | None] = mapped_column(String(40))  # their error records, until the error file
    output_file_id: Mapped[str | None] = mapped_column(String(40))
    error_file_id: Mapped[str | None] = mapped_column(String(40))
    batch_metadata: Mapped[dict[str, Any] | None]
    ingest_lease: Mapped[str | None] = mapped_column(String(40))  # who reads the file while it is validating
    ingested_at: Mapped[datetime | None]  # the reader's last sign of life: a stale one is taken over
    errors: Mapped[dict[str, Any] | None]  # why the batch failed as a whole (OpenAI's ``errors``)
    key_id: Mapped[int | None]  # the key that created it: a resumed reader checks the lines as that key
    output_expires_s: Mapped[int | None]  # its output files' lifetime (else ``files.expires_s``)


class AdminAction(Base):
    """One change an operator made to tenants or keys: who, what, when (never a key's secret)."""

    __tablename__ = "admin_actions"
    __table_args__ = (Index(None, "at"), Index(None, "target", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # who did it: the api's X-Gateway-Operator, the CLI's user
    via: Mapped[str] = mapped_column(String(200))  # how: "api 10.0.0.7", "cli alice@host"
    action: Mapped[str] = mapped_column(String(50))  # tenant.create, key.rotate, ...
    target: Mapped[str] = mapped_column(String(100))  # tenant:acme, key:key_3f...
    details: Mapped[dict[str, Any] | None]
