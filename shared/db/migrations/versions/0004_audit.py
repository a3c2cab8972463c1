"""The audit log (``audit_events``), and what the injection screen and redaction found per job.

Revision ID: 0004_audit
Revises: 0003_job_retention
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_audit"
down_revision: str | None = "0003_job_retention"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
WHEN = sa.DateTime(timezone=True)
CONTENT_KEPT = "request IS NOT NULL OR response IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("screening", JSON_DOC, nullable=True))
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", WHEN, nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.String(length=30), nullable=True),
        sa.Column("feature", sa.String(length=100), nullable=True),
        sa.Column("lane", sa.String(length=20), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("model_used", sa.String(length=200), nullable=True),
        sa.Column("deployment", sa.String(length=200), nullable=True),
        sa.Column("decision", JSON_DOC, nullable=True),
        sa.Column("redactions", JSON_DOC, nullable=True),
        sa.Column("screen", JSON_DOC, nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Numeric(18, 8, asdecimal=False), nullable=False),
        sa.Column("content_mode", sa.String(length=10), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=True),
        sa.Column("response_sha256", sa.String(length=64), nullable=True),
        sa.Column("request", JSON_DOC, nullable=True),
        sa.Column("response", JSON_DOC, nullable=True),
        sa.Column("content_until", WHEN, nullable=True),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=True),
        sa.Column("hash", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_events")),
        sa.UniqueConstraint("tenant_id", "seq", name=op.f("uq_audit_events_tenant_id_seq")),
        sa.CheckConstraint("kind IN ('call', 'admin')", name=op.f("ck_audit_events_kind")),
    )
    op.create_index(op.f("ix_audit_events_tenant_id_at"), "audit_events", ["tenant_id", "at"])
    op.create_index("ix_audit_events_unsealed", "audit_events", ["id"],
                    sqlite_where=sa.text("seq IS NULL"), postgresql_where=sa.text("seq IS NULL"))
    op.create_index("ix_audit_events_content_until", "audit_events", ["content_until"],
                    sqlite_where=sa.text(CONTENT_KEPT), postgresql_where=sa.text(CONTENT_KEPT))


def downgrade() -> None:
    op.drop_table("audit_events")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("screening")
