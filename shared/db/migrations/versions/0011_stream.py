"""Streamed jobs keep how they stream: ``jobs.stream`` is ``JobSpec.stream`` (``{dialect, usage}``), NULL
for a job that does not stream, so recovery rebuilds a streamed job as streamed (its resumable stream,
its answer in the caller's dialect) rather than answering it whole at the end.

Revision ID: 0011_stream
Revises: 0010_batch_ingest
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.db.models import JSONDoc

revision: str = "0011_stream"
down_revision: str | None = "0010_batch_ingest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("stream", JSONDoc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("stream")
