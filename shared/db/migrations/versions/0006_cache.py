"""The cache: a job answered from it says whose answer it served, how close the question was, and what it saved.

``cache_status`` (hit, semantic, miss, bypass) was there from the start; a hit's job row now also
holds ``cache_source_job`` (the job that paid for the answer), ``cache_similarity`` (a semantic hit's
cosine similarity) and ``saved_usd`` (what that answer had cost). Existing rows are misses that saved nothing.

Revision ID: 0006_cache
Revises: 0005_routing
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_cache"
down_revision: str | None = "0005_routing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("cache_source_job", sa.String(length=30), nullable=True))
        batch_op.add_column(sa.Column("cache_similarity", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("saved_usd", sa.Numeric(18, 8, asdecimal=False), nullable=False,
                                      server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("saved_usd")
        batch_op.drop_column("cache_similarity")
        batch_op.drop_column("cache_source_job")
