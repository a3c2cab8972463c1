"""Routed jobs keep their route, how often they escalated, and what the route's top tier would have cost.

``route`` is the route taken at accept (task, why, its tiers); ``escalations`` counts the attempts whose
answer failed a check and sent the job up a tier; ``route_ceiling_usd`` is the answer's usage priced at
the route's most expensive tier, and ``saving_usd`` that less what the job cost (all its attempts).
All NULL (0 for ``escalations``) for a job that named a model. A key may hold a models policy of its own
(``api_keys.models``: ``{"allow": [...], "deny": [...]}``), on top of its tenant's.

Revision ID: 0005_routing
Revises: 0004_audit
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_routing"
down_revision: str | None = "0004_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
MONEY = sa.Numeric(18, 8, asdecimal=False)


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("models", JSON_DOC, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("route", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("escalations", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("route_ceiling_usd", MONEY, nullable=True))
        batch.add_column(sa.Column("saving_usd", MONEY, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for name in ("saving_usd", "route_ceiling_usd", "escalations", "route"):
            batch.drop_column(name)
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("models")
