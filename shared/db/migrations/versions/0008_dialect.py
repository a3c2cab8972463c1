"""Dialects: a job's request is stored in the format its caller wrote it in.

``jobs.dialect`` says which (``openai`` or ``anthropic``, ``shared.dialects``), so an Anthropic
request is forwarded to an Anthropic deployment exactly as written, and recovery can rebuild the job
from its row. Existing rows were all written in the OpenAI form.

Revision ID: 0008_dialect
Revises: 0007_usage
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_dialect"
down_revision: str | None = "0007_usage"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("dialect", sa.String(length=20), nullable=False, server_default="openai"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("dialect")
