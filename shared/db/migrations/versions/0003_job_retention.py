"""Job retention: a finished job's request may be purged, and the purge finds its jobs by index.

``jobs.request`` becomes nullable: NULL means its content was purged (``shared/db/retention.py``).
The partial index holds only finished jobs whose content is still there, so the purge reads the
few that are due instead of walking every old row, and a new (unfinished) job costs it no write.

Revision ID: 0003_job_retention
Revises: 0002_key_lanes
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_job_retention"
down_revision: str | None = "0002_key_lanes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UNPURGED = "finished_at IS NOT NULL AND request IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("request", existing_type=JSON_DOC, nullable=True)
    op.create_index("ix_jobs_finished_at_unpurged", "jobs", ["finished_at"],
                    sqlite_where=sa.text(UNPURGED), postgresql_where=sa.text(UNPURGED))


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at_unpurged", table_name="jobs")
    op.execute("UPDATE jobs SET request = '{}' WHERE request IS NULL")  # purged content stays gone
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.alter_column("request", existing_type=JSON_DOC, nullable=False)
