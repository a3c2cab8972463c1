"""Usage and cost you can bill from, dollar budgets, and the management API.

- ``usage_rollups``: usage and cost per hour and per day by tenant, feature, model, deployment and key,
  written with each attempt record (``shared.db.usage``).
- ``attempts`` keep what the rollups are made of (model, cached / cache-write / reasoning tokens,
  savings, whether the attempt ended its job), so ``gateway usage reconcile`` can check them.
- ``api_keys`` gain a public id (the management API's name for a key), their own RPM/TPM limits, a
  dollar budget, an expiry, and the models and features they may use.
- ``tenants.settings``: what the management API set over the config file's tenant settings.
- ``admin_actions``: who changed which tenant or key, when.

Revision ID: 0007_usage
Revises: 0006_cache
Create Date: 2026-12-01
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_usage"
down_revision: str | None = "0006_cache"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the model types: a migration must not change when the models do.
JSON_DOC = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
MONEY = sa.Numeric(precision=18, scale=8, asdecimal=False)
ROLLUP_KEY = ("granularity", "bucket_start", "tenant_id", "feature", "model", "deployment", "key_id")
ROLLUP_COUNTS = ("requests", "succeeded", "attempts", "failed_attempts", "input_tokens", "cached_tokens",
                 "cache_write_tokens", "output_tokens", "reasoning_tokens")
ROLLUP_MONEY = ("cost_usd", "failed_cost_usd", "cache_savings_usd", "routing_savings_usd")


def _create_usage_rollups() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("granularity", sa.String(length=1), nullable=False),
        sa.Column("bucket_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tenant_id", sa.String(length=63), nullable=False),
        sa.Column("feature", sa.String(length=100), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("deployment", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in ROLLUP_COUNTS),
        *(sa.Column(name, MONEY, nullable=False) for name in ROLLUP_MONEY),
        sa.CheckConstraint("granularity IN ('h', 'd')", name=op.f("ck_usage_rollups_granularity")),
        sa.PrimaryKeyConstraint(*ROLLUP_KEY, name=op.f("pk_usage_rollups")),
    )
    op.create_index(op.f("ix_usage_rollups_granularity_tenant_id_bucket_start"), "usage_rollups",
                    ["granularity", "tenant_id", "bucket_start"])


def _create_admin_actions() -> None:
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("via", sa.String(length=200), nullable=False),
        sa.Column("action", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=100), nullable=False),
        sa.Column("details", JSON_DOC, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_actions")),
    )
    op.create_index(op.f("ix_admin_actions_at"), "admin_actions", ["at"])
    op.create_index(op.f("ix_admin_actions_target_at"), "admin_actions", ["target", "at"])


def _extend_attempts() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("model", sa.String(length=200), nullable=True))
        for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens"):
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        for name in ("cache_savings_usd", "routing_savings_usd"):
            batch.add_column(sa.Column(name, MONEY, nullable=False, server_default="0"))
        batch.add_column(sa.Column("ended_job", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("attempts") as batch:  # the defaults were for the rows already there
        for name in ("cached_tokens", "cache_write_tokens", "reasoning_tokens", "cache_savings_usd",
                     "routing_savings_usd", "ended_job"):
            batch.alter_column(name, server_default=None)


def _extend_api_keys() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("rpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("tpm", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("budget", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("allowed_models", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("allowed_features", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))
    keys = sa.table("api_keys", sa.column("id", sa.Integer()), sa.column("public_id", sa.String()))
    connection = op.get_bind()
    for (key_id,) in connection.execute(sa.select(keys.c.id)).fetchall():
        connection.execute(sa.update(keys).where(keys.c.id == key_id)
                           .values(public_id="key_" + secrets.token_hex(8)))
    with op.batch_alter_table("api_keys") as batch:
        batch.alter_column("public_id", existing_type=sa.String(length=32), nullable=False)
        batch.create_index(batch.f("ix_api_keys_public_id"), ["public_id"], unique=True)


def upgrade() -> None:
    _create_usage_rollups()
    _create_admin_actions()
    _extend_attempts()
    _extend_api_keys()
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("settings", JSON_DOC, nullable=True))
        batch.add_column(sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("updated_at")
        batch.drop_column("settings")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_index(batch.f("ix_api_keys_public_id"))
        for name in ("updated_at", "allowed_features", "allowed_models", "expires_at", "budget", "tpm", "rpm",
                     "public_id"):
            batch.drop_column(name)
    with op.batch_alter_table("attempts") as batch:
        for name in ("ended_job", "routing_savings_usd", "cache_savings_usd", "reasoning_tokens",
                     "cache_write_tokens", "cached_tokens", "model"):
            batch.drop_column(name)
    op.drop_index(op.f("ix_admin_actions_target_at"), table_name="admin_actions")
    op.drop_index(op.f("ix_admin_actions_at"), table_name="admin_actions")
    op.drop_table("admin_actions")
    op.drop_index(op.f("ix_usage_rollups_granularity_tenant_id_bucket_start"), table_name="usage_rollups")
    op.drop_table("usage_rollups")
