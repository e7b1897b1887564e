"""Hub workers sharing a site (`etp hub --worker`): heartbeats, battery leases, and each
worker's part of every aggregator's trading period.

Revision ID: 0010_cluster
Revises: 0009_trade_evidence
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_cluster"
down_revision = "0009_trade_evidence"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create hub_workers, device_leases and aggregator_shares (empty; a single hub never
    writes them, so this migration can run before old single-hub processes stop)."""
    op.create_table(
        "hub_workers",
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("started_ms", sa.BigInteger(), nullable=False),
        sa.Column("seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("http_url", sa.String(256), nullable=True),
        sa.PrimaryKeyConstraint("worker_id", name="pk_hub_workers"),
    )
    op.create_table(
        "device_leases",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("expires_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "device_id", name="pk_device_leases"),
    )
    op.create_table(
        "aggregator_shares",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("period", sa.BigInteger(), nullable=False),
        sa.Column("aggregator_id", sa.BigInteger(), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("spent_mc", sa.BigInteger(), nullable=False),
        sa.Column("bought_wh", sa.BigInteger(), nullable=False),
        sa.Column("wins", sa.BigInteger(), nullable=False),
        sa.Column("losses", sa.BigInteger(), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "site", "period", "aggregator_id", "worker_id", name="pk_aggregator_shares"
        ),
    )


def downgrade() -> None:
    """Drop the cluster tables (workers re-create their leases at the next start)."""
    op.drop_table("aggregator_shares")
    op.drop_table("device_leases")
    op.drop_table("hub_workers")
