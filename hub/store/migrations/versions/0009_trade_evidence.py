"""Trade evidence: the signed frames that verified a trade, kept with it.

Revision ID: 0009_trade_evidence
Revises: 0008_device_credentials
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_trade_evidence"
down_revision = "0008_device_credentials"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Two nullable columns (trades verified before have none)."""
    with op.batch_alter_table("trades") as batch:
        batch.add_column(sa.Column("evidence_request", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("evidence_answer", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    """Drop them (the frames are lost; the ledger keeps their hash)."""
    with op.batch_alter_table("trades") as batch:
        batch.drop_column("evidence_answer")
        batch.drop_column("evidence_request")
