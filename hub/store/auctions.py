"""Store API for auctions: opened and closed through the group commit, read for recovery."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.store.errors import AuctionStateError, InvalidValueError, StoreError, UnknownAuctionError
from hub.store.models import AUCTION_CLOSED_STATUSES, AUCTIONS, TRADE_STATUSES, AuctionRow
from hub.store.parts import StoreParts
from hub.store.trades import set_trades_status
from hub.store.validate import check_ints, check_text, now_ms, to_row

__all__ = ["AuctionStore", "bulk_insert_auctions"]

log = logging.getLogger("hub.store")

_CLOSE_STATEMENTS: dict[tuple[str, ...], sa.Update] = {}


def _close_statement(columns: tuple[str, ...]) -> sa.Update:
    """UPDATE closing one auction, setting `columns`; built once per column set (an auction
    closes at every step of the market, so its statement is reused, not rebuilt)."""
    statement = _CLOSE_STATEMENTS.get(columns)
    if statement is None:
        statement = (
            sa.update(AUCTIONS)
            .where(
                AUCTIONS.c.id == sa.bindparam("target_id"),
                sa.or_(
                    AUCTIONS.c.status == "open", AUCTIONS.c.status == sa.bindparam("new_status")
                ),
            )
            .values({name: sa.bindparam(f"new_{name}") for name in columns})
        )
        _CLOSE_STATEMENTS[columns] = statement
    return statement


async def bulk_insert_auctions(
    connection: AsyncConnection, rows: list[tuple[int, dict[str, Any]]], results: list[Any]
) -> None:
    """Group-commit handler: new auctions depend on nothing else in the batch, so one INSERT
    adds them all; each request's result is its auction id (in parameter order)."""
    inserted = await connection.execute(
        sa.insert(AUCTIONS).returning(AUCTIONS.c.id, sort_by_parameter_order=True),
        [row for _, row in rows],
    )
    ids = inserted.scalars().all()
    if len(ids) != len(rows):
        raise StoreError(f"{len(rows)} auctions inserted but {len(ids)} ids returned")
    for (n, _row), auction_id in zip(rows, ids, strict=True):
        results[n] = auction_id


class AuctionStore(StoreParts):
    """Auctions: an id from the database at opening, one final status at closing."""

    async def open_auction(
        self,
        *,
        device_id: int,
        site: str,
        mechanism: str,
        lot_wh: int,
        reserve_mc: int,
        opened_ms: int,
    ) -> int:
        """Record a new open auction; returns its id (unique in this database, fits u32)."""
        check_text("site", site, 64)
        check_text("mechanism", mechanism, 32)
        check_ints(device_id=device_id, lot_wh=lot_wh, reserve_mc=reserve_mc, opened_ms=opened_ms)
        new_auction = {
            "device_id": device_id,
            "site": site,
            "mechanism": mechanism,
            "lot_wh": lot_wh,
            "reserve_mc": reserve_mc,
            "status": "open",
            "opened_ms": opened_ms,
        }

        async def insert_auction(connection: AsyncConnection) -> Any:  # only when run alone
            result = await connection.execute(sa.insert(AUCTIONS).values(new_auction))
            return result.inserted_primary_key[0] if result.inserted_primary_key else None

        auction_id = await self._group.write(
            insert_auction, ("auctions", new_auction), on_orphan=self._close_orphan
        )
        if not isinstance(auction_id, int):
            raise StoreError(
                f"the database returned no id for the new auction ({self._db.safe_url})"
            )
        return auction_id

    def _close_orphan(self, auction_id: int) -> None:
        """open_auction's caller was cancelled after its row was committed: close it."""

        async def terminate() -> None:
            try:
                await self.close_auction(auction_id, status="terminated", closed_ms=now_ms())
            except StoreError as err:
                log.warning("could not terminate orphaned auction %d: %s", auction_id, err)

        task = asyncio.get_running_loop().create_task(terminate())
        self._orphan_closes.add(task)
        task.add_done_callback(self._orphan_closes.discard)

    async def close_auction(
        self,
        auction_id: int,
        *,
        status: str,
        clearing_price_mc: int | None = None,
        winner_id: int | None = None,
        energy_wh: int | None = None,
        closed_ms: int,
        trade_status: str | None = None,
    ) -> None:
        """Close an open auction as cleared, no_sale or terminated; with `trade_status`, its
        recorded trade becomes that in the same transaction ('verified' queues its settlement).

        Closing again with the same status is allowed (fields given replace stored ones);
        closing an auction already closed with another status raises AuctionStateError.
        """
        fields = {
            "status": status,
            "clearing_price_mc": clearing_price_mc,
            "winner_id": winner_id,
            "energy_wh": energy_wh,
            "trade_status": trade_status,
        }
        if not await self.close_auctions([(auction_id, fields)], closed_ms=closed_ms):
            return
        current = await self.get_auction(auction_id)
        if current is None:
            raise UnknownAuctionError(f"no auction with id {auction_id}")
        raise AuctionStateError(
            f"auction {auction_id} is already {current.status!r}; it cannot be closed as {status!r}"
        )

    async def close_auctions(
        self, closes: Sequence[tuple[int, dict[str, Any]]], *, closed_ms: int
    ) -> list[int]:
        """Close many auctions in one transaction (the auction writer's batches): each is
        (auction id, fields as close_auction takes them: status, and optionally
        clearing_price_mc, winner_id, energy_wh, trade_status, evidence: the frames that
        verified its trade). One UPDATE per set of columns
        for the auctions and one per trade status for their trades. Returns the ids that could
        not be closed (unknown, or already closed with another status): nothing of theirs
        changes. Raises InvalidValueError, before writing anything, for a bad value."""
        check_ints(closed_ms=closed_ms)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        wanted: dict[int, str] = {}
        trades: dict[str, list[int]] = {}
        evidence: dict[int, tuple[bytes, bytes]] = {}
        for auction_id, fields in closes:
            status = fields["status"]
            if status not in AUCTION_CLOSED_STATUSES:
                raise InvalidValueError(
                    f"auction status must be one of {AUCTION_CLOSED_STATUSES}, not {status!r}"
                )
            trade_status = fields.get("trade_status")
            if trade_status is not None and trade_status not in TRADE_STATUSES:
                raise InvalidValueError(
                    f"trade status must be one of {TRADE_STATUSES}, not {trade_status!r}"
                )
            cleared: dict[str, int | None] = {
                "clearing_price_mc": fields.get("clearing_price_mc"),
                "winner_id": fields.get("winner_id"),
                "energy_wh": fields.get("energy_wh"),
            }
            check_ints(
                clearing_price_mc=cleared["clearing_price_mc"],
                winner_id=cleared["winner_id"],
                energy_wh=cleared["energy_wh"],
            )
            values: dict[str, Any] = {"status": status, "closed_ms": closed_ms}
            values.update((name, value) for name, value in cleared.items() if value is not None)
            parameters = {f"new_{name}": value for name, value in values.items()}
            parameters["target_id"] = auction_id
            by_columns.setdefault(tuple(values), []).append(parameters)
            wanted[auction_id] = status
            if trade_status is not None:
                trades.setdefault(trade_status, []).append(auction_id)
            if fields.get("evidence") is not None:
                evidence[auction_id] = fields["evidence"]

        async def update_auctions(connection: AsyncConnection) -> list[int]:
            for columns, rows in by_columns.items():
                await connection.execute(_close_statement(columns), rows)
            found = await connection.execute(
                sa.select(AUCTIONS.c.id, AUCTIONS.c.status).where(AUCTIONS.c.id.in_(wanted))
            )
            now = {auction_id: status for auction_id, status in found}
            refused = [a for a, status in wanted.items() if now.get(a) != status]
            for trade_status, auction_ids in trades.items():
                closed = [a for a in auction_ids if now.get(a) == wanted[a]]
                await set_trades_status(connection, trade_status, closed_ms, auction_ids=closed,
                                        evidence=evidence)
            return refused

        if not closes:
            return []
        # Errors are raised by the caller, not inside the shared transaction (they would spoil it).
        refused: list[int] = await self._group.write(update_auctions)
        return refused

    async def update_auction_offers(self, offers: Iterable[tuple[int, int, int]]) -> int:
        """Record the offer each battery actually made: (auction_id, lot_wh, reserve_mc) rows.

        The auction row is opened before the battery's QueryResponse arrives; this sets its
        lot and reserve to the ones the battery answered with (whatever the auction's status
        by now). All rows in one transaction; returns how many auctions were found."""
        rows = []
        for auction_id, lot_wh, reserve_mc in offers:
            check_ints(auction_id=auction_id, lot_wh=lot_wh, reserve_mc=reserve_mc)
            rows.append({"target_id": auction_id, "lot_wh": lot_wh, "reserve_mc": reserve_mc})
        if not rows:
            return 0
        statement = (
            sa.update(AUCTIONS)
            .where(AUCTIONS.c.id == sa.bindparam("target_id"))
            .values(lot_wh=sa.bindparam("lot_wh"), reserve_mc=sa.bindparam("reserve_mc"))
        )

        async def update_offers(connection: AsyncConnection) -> int:
            result = await connection.execute(statement, rows)
            return max(0, result.rowcount)

        return await self._group.write(update_offers)

    async def get_auction(self, auction_id: int) -> AuctionRow | None:
        """One auction by id, or None."""
        rows = await self._db.fetch(sa.select(AUCTIONS).where(AUCTIONS.c.id == auction_id))
        return to_row(AuctionRow, rows[0]) if rows else None

    async def open_auctions(self) -> list[AuctionRow]:
        """Auctions still open (status 'open'), oldest first: resume or terminate on restart."""
        rows = await self._db.fetch(
            sa.select(AUCTIONS).where(AUCTIONS.c.status == "open").order_by(AUCTIONS.c.id)
        )
        return [to_row(AuctionRow, row) for row in rows]

    async def terminate_open_auctions(
        self, *, closed_ms: int, site: str | None = None
    ) -> list[int]:
        """Mark every open auction (of one site, if given) terminated; returns their ids."""
        condition = AUCTIONS.c.status == "open"
        if site is not None:
            condition = sa.and_(condition, AUCTIONS.c.site == site)
        async with self._db.transaction() as connection:
            found = await connection.execute(
                sa.update(AUCTIONS)
                .where(condition)
                .values(status="terminated", closed_ms=closed_ms)
                .returning(AUCTIONS.c.id)
            )
            return sorted(found.scalars().all())

    async def list_auctions(self, limit: int | None = None) -> list[AuctionRow]:
        """Auctions, newest first (at most `limit`)."""
        statement = sa.select(AUCTIONS).order_by(AUCTIONS.c.id.desc())
        if limit is not None:
            statement = statement.limit(limit)
        return [to_row(AuctionRow, row) for row in await self._db.fetch(statement)]
