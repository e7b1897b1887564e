"""Trade status: a trade counts (and is settled) only once its battery proved it.

Existing trades: void where their settlement had failed (the battery refused the confirm),
recorded where their auction is still open (the next start asks the battery), unverified where
the hub logged that the battery never answered, verified otherwise. Only verified trades keep a
settlement outbox row.

Revision ID: 0003_trade_status
Revises: 0002_event_seq
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_trade_status"
down_revision = "0002_event_seq"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add trades.status (indexed), classify existing trades, keep outbox rows of verified ones."""
    with op.batch_alter_table("trades") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="verified")
        )
        batch.create_index("ix_trades_status", ["status"])
    op.execute(
        "UPDATE trades SET status = 'void' WHERE id IN "
        "(SELECT trade_id FROM settlements WHERE status = 'failed')"
    )
    op.execute(
        "UPDATE trades SET status = 'recorded' WHERE status = 'verified' AND auction_id IN "
        "(SELECT id FROM auctions WHERE status = 'open')"
    )
    op.execute(
        "UPDATE trades SET status = 'unverified' WHERE status = 'verified' AND auction_id IN "
        "(SELECT auction_id FROM events WHERE kind = 'trade_unverified')"
    )
    op.execute(
        "DELETE FROM settlements WHERE trade_id IN "
        "(SELECT id FROM trades WHERE status <> 'verified')"
    )


def downgrade() -> None:
    """Drop trades.status (every remaining trade looks confirmed again, as before)."""
    with op.batch_alter_table("trades") as batch:
        batch.drop_index("ix_trades_status")
        batch.drop_column("status")
