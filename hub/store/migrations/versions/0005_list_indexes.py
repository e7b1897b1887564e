"""Indexes for the API's list queries: time ranges and per-device / per-bidder filters of
trades and auctions, time ranges and per-device filters of events (keyset order included).

Revision ID: 0005_list_indexes
Revises: 0004_api_keys
Create Date: 2026-12-05
"""

from alembic import op

revision = "0005_list_indexes"
down_revision = "0004_api_keys"
branch_labels = None
depends_on = None

# (name, table, columns): each ends with the table's keyset key, so a filtered page is one
# range scan of the index in key order, on SQLite and PostgreSQL alike.
_INDEXES = (
    ("ix_trades_confirmed_ms_id", "trades", ["confirmed_ms", "id"]),
    ("ix_trades_device_id_id", "trades", ["device_id", "id"]),
    ("ix_trades_bidder_id_id", "trades", ["bidder_id", "id"]),
    ("ix_auctions_opened_ms_id", "auctions", ["opened_ms", "id"]),
    ("ix_auctions_device_id_id", "auctions", ["device_id", "id"]),
    ("ix_events_ts_ms_seq", "events", ["ts_ms", "seq"]),
    ("ix_events_device_id_seq", "events", ["device_id", "seq"]),
)


def upgrade() -> None:
    """Create the list indexes (reads only: no data changes)."""
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    """Drop the list indexes."""
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
