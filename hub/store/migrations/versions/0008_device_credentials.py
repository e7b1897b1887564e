"""Device credentials: provisioned batteries, their key generation and broker password hash.

Revision ID: 0008_device_credentials
Revises: 0007_wallets
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0008_device_credentials"
down_revision = "0007_wallets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create device_credentials (empty: `etp device add` provisions batteries)."""
    op.create_table(
        "device_credentials",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("key_generation", sa.Integer(), nullable=False),
        sa.Column("broker_password_hash", sa.String(256), nullable=False),
        sa.Column("owner", sa.String(64), nullable=True),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("rotated_ms", sa.BigInteger(), nullable=True),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("site", "device_id", name="pk_device_credentials"),
    )


def downgrade() -> None:
    """Drop device_credentials (every battery is unprovisioned again)."""
    op.drop_table("device_credentials")
