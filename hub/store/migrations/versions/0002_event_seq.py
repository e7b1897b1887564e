"""Event sequence numbers: events.seq (unique, existing rows get seq = id), the index (kind, seq)
instead of (kind), and the event_sequence reservation.

Revision ID: 0002_event_seq
Revises: 0001_initial
Create Date: 2026-12-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_event_seq"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Number existing events by their id and reserve everything up to the highest one."""
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
    op.execute("UPDATE events SET seq = id")
    with op.batch_alter_table("events") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("ix_events_seq", ["seq"], unique=True)
        batch.drop_index("ix_events_kind")  # (kind, seq) serves kind lookups and kind + seq
        batch.create_index("ix_events_kind_seq", ["kind", "seq"])
    sequence = op.create_table(
        "event_sequence",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("reserved_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_event_sequence"),
    )
    op.execute(
        sequence.insert().from_select(
            ["name", "reserved_through"],
            sa.select(
                sa.literal("events"), sa.func.coalesce(sa.func.max(sa.column("id")), 0)
            ).select_from(sa.table("events")),
        )
    )


def downgrade() -> None:
    """Drop the reservation and the seq column (events keep their ids)."""
    op.drop_table("event_sequence")
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_kind_seq")
        batch.drop_index("ix_events_seq")
        batch.drop_column("seq")
        batch.create_index("ix_events_kind", ["kind"])
