"""Synthetic auctions and trades written straight into a store: the data set of the gateway
benchmark's dashboard queries and of the list-query tests (not the trading path)."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from hub.store import Store
from hub.store.models import AUCTIONS, TRADES

__all__ = ["SEED_STATUSES", "add_trades"]

# Every trade status, in the order trade n takes them (n % 4).
SEED_STATUSES = ("verified", "unverified", "void", "recorded")


async def add_trades(
    store: Store,
    count: int,
    *,
    first_id: int = 1,
    first_ms: int = 1_000_000,
    statuses: Sequence[str] = SEED_STATUSES,
) -> None:
    """Write `count` cleared auctions, each with its trade, in one transaction.

    Trade (and auction) n is on device n % 7, won by bidder 1000 + n % 3, has status
    statuses[n % len(statuses)] and time first_ms + n // 2 (pairs share a time, so the
    (time, id) order is exercised). A hub started on such a store asks the batteries about
    its recorded and unverified trades: seed a store a hub will start on with decided
    statuses only (verified, void).
    """
    auctions = []
    trades = []
    for n in range(first_id, first_id + count):
        at_ms = first_ms + n // 2
        auctions.append(
            {
                "id": n,
                "device_id": n % 7,
                "site": "s",
                "mechanism": "ascending",
                "lot_wh": 1000,
                "reserve_mc": 10_000,
                "status": "cleared",
                "clearing_price_mc": 12_000,
                "winner_id": 1000 + n % 3,
                "energy_wh": 1000,
                "opened_ms": at_ms,
                "closed_ms": at_ms + 1,
            }
        )
        trades.append(
            {
                "id": n,
                "auction_id": n,
                "device_id": n % 7,
                "bidder_id": 1000 + n % 3,
                "price_mc": 12_000,
                "energy_wh": 1000,
                "reserve_mc": 10_000,
                "confirmed_ms": at_ms,
                "status": statuses[n % len(statuses)],
            }
        )
    async with store.sql.begin() as connection:
        await connection.execute(sa.insert(AUCTIONS), auctions)
        await connection.execute(sa.insert(TRADES), trades)
