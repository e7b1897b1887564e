"""Initial schema: devices, auctions, bids, trades, settlement outbox, events, metrics.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

# 64-bit ids on PostgreSQL, INTEGER (rowid alias) on SQLite.
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create every table of the store."""
    op.create_table(
        "devices",
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("health", sa.Integer(), nullable=True),
        sa.Column("energy_total_wh", sa.BigInteger(), nullable=True),
        sa.Column("energy_remaining_wh", sa.BigInteger(), nullable=True),
        sa.Column("reserve_mc", sa.BigInteger(), nullable=True),
        sa.Column("pct_for_sale", sa.Integer(), nullable=True),
        sa.Column("soc", sa.Integer(), nullable=True),
        sa.Column("voltage_mv", sa.Integer(), nullable=True),
        sa.Column("first_seen_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("site", "device_id", name="pk_devices"),
    )
    op.create_table(
        "auctions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("site", sa.String(64), nullable=False),
        sa.Column("mechanism", sa.String(32), nullable=False),
        sa.Column("lot_wh", sa.BigInteger(), nullable=False),
        sa.Column("reserve_mc", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("clearing_price_mc", sa.BigInteger(), nullable=True),
        sa.Column("winner_id", sa.BigInteger(), nullable=True),
        sa.Column("energy_wh", sa.BigInteger(), nullable=True),
        sa.Column("opened_ms", sa.BigInteger(), nullable=False),
        sa.Column("closed_ms", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auctions"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_auctions_status", "auctions", ["status"])
    op.create_table(
        "bids",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("auction_id", sa.BigInteger(), nullable=False),
        sa.Column("bidder_id", sa.BigInteger(), nullable=False),
        sa.Column("price_mc", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.Integer(), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bids"),
    )
    op.create_index("ix_bids_auction_id", "bids", ["auction_id"])
    op.create_table(
        "trades",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("auction_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=False),
        sa.Column("bidder_id", sa.BigInteger(), nullable=False),
        sa.Column("price_mc", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("reserve_mc", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["auction_id"], ["auctions.id"], name="fk_trades_auction_id_auctions"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_trades"),
        sa.UniqueConstraint("auction_id", name="uq_trades_auction_id"),
    )
    op.create_table(
        "settlements",
        sa.Column("trade_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("signature", sa.String(128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["trade_id"], ["trades.id"], name="fk_settlements_trade_id_trades"),
        sa.PrimaryKeyConstraint("trade_id", name="pk_settlements"),
    )
    op.create_index("ix_settlements_status", "settlements", ["status"])
    op.create_table(
        "events",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=True),
        sa.Column("auction_id", sa.BigInteger(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_kind", "events", ["kind"])
    op.create_table(
        "metrics",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=True),
        sa.Column("ts_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metrics"),
    )
    op.create_index("ix_metrics_name_ts_ms", "metrics", ["name", "ts_ms"])


def downgrade() -> None:
    """Drop every table of the store."""
    for index, table in (
        ("ix_metrics_name_ts_ms", "metrics"),
        ("ix_events_kind", "events"),
        ("ix_settlements_status", "settlements"),
        ("ix_bids_auction_id", "bids"),
        ("ix_auctions_status", "auctions"),
    ):
        op.drop_index(index, table_name=table)
    for table in ("metrics", "events", "settlements", "trades", "bids", "auctions", "devices"):
        op.drop_table(table)
