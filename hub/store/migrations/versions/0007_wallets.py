"""Wallets: the public keys of the aggregators and battery owners the hub settles for.

Revision ID: 0007_wallets
Revises: 0006_alerts
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_wallets"
down_revision = "0006_alerts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create wallets (empty: `etp wallet add` fills it)."""
    op.create_table(
        "wallets",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("party_id", sa.BigInteger(), nullable=False),
        sa.Column("pubkey", sa.String(44), nullable=False),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "role", "party_id", name="pk_wallets"),
    )


def downgrade() -> None:
    """Drop wallets (the registrations are lost; the ledger keeps the parties' accounts)."""
    op.drop_table("wallets")
