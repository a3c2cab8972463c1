"""Batches: ``POST /v1/batches`` keeps a row per batch, and each of its lines is a job that names it.

Revision ID: 0009_batches
Revises: 0008_dialect
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.models import BATCH_STATUSES, JSONDoc, UTCDateTime

revision: str = "0009_batches"
down_revision: str | None = "0008_dialect"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("input_file_id", sa.String(length=40), nullable=False),
        sa.Column("completion_window", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("cancelled_at", UTCDateTime(), nullable=True),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("invalid", sa.Integer(), nullable=False),
        sa.Column("invalid_file", sa.String(length=40), nullable=True),
        sa.Column("output_file_id", sa.String(length=40), nullable=True),
        sa.Column("error_file_id", sa.String(length=40), nullable=True),
        sa.Column("batch_metadata", JSONDoc, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_batches_tenant_id_tenants"),
                                ondelete="CASCADE"),
        sa.CheckConstraint(f"status IN {BATCH_STATUSES!r}", name=op.f("ck_batches_status")),
    )
    op.create_index(op.f("ix_batches_tenant_id_id"), "batches", ["tenant_id", "id"])
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("batch_id", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("custom_id", sa.String(length=200), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_batch_id_status"), ["batch_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_batch_id_status"))
        batch_op.drop_column("custom_id")
        batch_op.drop_column("batch_id")
    op.drop_index(op.f("ix_batches_tenant_id_id"), table_name="batches")
    op.drop_table("batches")
