"""Initial schema: tenants, hashed API keys, jobs and their attempts.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when the models do.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
MONEY = sa.Numeric(precision=18, scale=8, asdecimal=False)
JOB_STATUSES = "('queued', 'admitted', 'running', 'succeeded', 'failed', 'cancelled', 'expired')"
LANES = "('interactive', 'standard', 'batch')"


def _timestamp(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_tenants() -> None:
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
    )


def _create_api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prefix", sa.String(length=12), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        _timestamp("created_at"),
        _timestamp("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_api_keys_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
    )
    with op.batch_alter_table("api_keys") as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_key_hash"), ["key_hash"], unique=True)
        batch_op.create_index(batch_op.f("ix_api_keys_tenant_id"), ["tenant_id"], unique=False)


def _create_jobs() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=30), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("feature", sa.String(length=100), nullable=False),
        sa.Column("lane", sa.String(length=20), nullable=False),
        sa.Column("task", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("request", JSON_DOC, nullable=False),
        sa.Column("result", JSON_DOC, nullable=True),
        sa.Column("error", JSON_DOC, nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        _timestamp("deadline"),
        sa.Column("estimate_tokens", sa.Integer(), nullable=True),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("model_used", sa.String(length=200), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        sa.Column("cache_status", sa.String(length=20), nullable=False),
        sa.Column("queued_ms", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _timestamp("created_at"),
        _timestamp("admitted_at", nullable=True),
        _timestamp("finished_at", nullable=True),
        _timestamp("updated_at"),
        sa.CheckConstraint(f"lane IN {LANES}", name=op.f("ck_jobs_lane")),
        sa.CheckConstraint(f"status IN {JOB_STATUSES}", name=op.f("ck_jobs_status")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_jobs_tenant_id_tenants"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_jobs_tenant_id_idempotency_key")),
    )
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_status_deadline"), ["status", "deadline"])
        batch_op.create_index(batch_op.f("ix_jobs_tenant_id_id"), ["tenant_id", "id"])
        batch_op.create_index(batch_op.f("ix_jobs_tenant_id_status_id"), ["tenant_id", "status", "id"])


def _create_attempts() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(length=30), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", MONEY, nullable=False),
        _timestamp("started_at"),
        _timestamp("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_attempts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("job_id", "number", name=op.f("uq_attempts_job_id_number")),
    )


def upgrade() -> None:
    _create_tenants()
    _create_api_keys()
    _create_jobs()
    _create_attempts()


def downgrade() -> None:
    op.drop_table("attempts")
    op.drop_table("jobs")
    op.drop_table("api_keys")
    op.drop_table("tenants")
