"""Keys carry the highest lane they may use; jobs remember the key that submitted them.

Revision ID: 0002_key_lanes
Revises: 0001_initial
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_key_lanes"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LANES = "('interactive', 'standard', 'batch')"


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_lane", sa.String(length=20), nullable=True))
        batch.create_check_constraint("max_lane", f"max_lane IS NULL OR max_lane IN {LANES}")
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("key_id", sa.Integer(), nullable=True))
        batch.create_index(batch.f("ix_jobs_key_id_status"), ["key_id", "status"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_key_id_status"))
        batch.drop_column("key_id")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_constraint("max_lane", type_="check")
        batch.drop_column("max_lane")
