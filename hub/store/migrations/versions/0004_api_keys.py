"""API keys of the HTTP gateway: name, role, the SHA-256 of the secret (never the secret).

Revision ID: 0004_api_keys
Revises: 0003_trade_status
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_api_keys"
down_revision = "0003_trade_status"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create api_keys (empty: keys are made with `etp apikey create`)."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("created_ms", sa.BigInteger(), nullable=False),
        sa.Column("revoked_ms", sa.BigInteger(), nullable=True),
        sa.Column("last_used_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    """Drop api_keys (every key is gone: clients need new ones after an upgrade)."""
    op.drop_table("api_keys")
