"""Alerts for operators: one open row per dedup key, kept as a record once acknowledged.

Revision ID: 0006_alerts
Revises: 0005_list_indexes
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_alerts"
down_revision = "0005_list_indexes"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create alerts (empty: the running hub raises them)."""
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("dedup_key", sa.String(96), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=True),
        sa.Column("message", sa.String(256), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("raised_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_ms", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("acknowledged_ms", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by_key_id", sa.Integer(), nullable=True),
        sa.Column("acknowledged_by_name", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_alerts_state_id", "alerts", ["state", "id"])
    op.create_index("ix_alerts_kind_id", "alerts", ["kind", "id"])
    op.create_index("ix_alerts_dedup_key_state", "alerts", ["dedup_key", "state"])


def downgrade() -> None:
    """Drop alerts (their history is lost)."""
    op.drop_table("alerts")
