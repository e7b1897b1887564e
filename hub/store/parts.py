"""What the store's domain mixins share: the database and the write paths of one Store."""

from __future__ import annotations

import asyncio

from hub.store.database import Database
from hub.store.group_commit import GroupCommit
from hub.store.sequence import EventSequence
from hub.store.write_behind import WriteBehind

__all__ = ["StoreParts"]


class StoreParts:
    """Attributes `Store.__init__` sets and every domain mixin (devices, auctions, trades,
    batched rows) uses: `_db` for reads and single transactions, `_group` for durable writes
    that share commits, `_writes` for rows written behind, `_sequence` for event numbers."""

    _db: Database
    _group: GroupCommit
    _writes: WriteBehind
    _sequence: EventSequence
    shared_event_seq: bool
    _orphan_closes: set[asyncio.Task[None]]
    stats: dict[str, int]
