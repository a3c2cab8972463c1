"""Batches are ingested in the background: who is reading the file (a lease), when it last moved
(so a dead reader's batch is resumed by another), the key that created it (the resumed reader checks
the lines as that key), the errors that failed a batch as a whole, how long its output files are
kept (``output_expires_after``), and its lines refused because its completion window could not be met.

Revision ID: 0010_batch_ingest
Revises: 0009_batches
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.models import JSONDoc, UTCDateTime

revision: str = "0010_batch_ingest"
down_revision: str | None = "0009_batches"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("ingest_lease", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("ingested_at", UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("errors", JSONDoc, nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("output_expires_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expired", sa.Integer(), nullable=False, server_default="0"))
        batch_op.create_index(batch_op.f("ix_batches_status_ingested_at"), ["status", "ingested_at"])


def downgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_status_ingested_at"))
        batch_op.drop_column("expired")
        batch_op.drop_column("output_expires_s")
        batch_op.drop_column("key_id")
        batch_op.drop_column("errors")
        batch_op.drop_column("ingested_at")
        batch_op.drop_column("ingest_lease")
