"""Store API for the trade ledger: durable trades (one per auction) and the settlement outbox."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from hub.store.errors import InvalidValueError, StoreError, UnknownAuctionError, UnknownTradeError
from hub.store.models import (
    AUCTIONS,
    SETTLEMENT_STATUSES,
    SETTLEMENTS,
    TRADE_STATUSES,
    TRADES,
    SettlementRow,
    TradeRow,
)
from hub.store.parts import StoreParts
from hub.store.validate import INT32, check_ints, now_ms, to_row

__all__ = ["TradeLedger", "bulk_insert_trades", "set_trades_status"]

log = logging.getLogger("hub.store")

_OPEN_TRADE_STATUSES = ("recorded", "unverified")  # not decided yet: the battery has the say


class _AlreadyTraded(Exception):
    """Internal: record_trade found the auction's trade already stored."""

    def __init__(self, auction_id: int) -> None:
        super().__init__(f"auction {auction_id} already has a trade")


def bulk_insert_trades(
    insert: Callable[[sa.Table], Any],
) -> Callable[[AsyncConnection, list[tuple[int, dict[str, Any]]], list[Any]], Any]:
    """Group-commit handler for trades, using the dialect's INSERT ... ON CONFLICT `insert`."""

    async def handler(
        connection: AsyncConnection, rows: list[tuple[int, dict[str, Any]]], results: list[Any]
    ) -> None:
        """All trades of the batch in one INSERT (ON CONFLICT DO NOTHING: a trade already
        stored, or a second request for the same auction, gets None)."""
        first: dict[int, tuple[int, dict[str, Any]]] = {}
        for n, row in rows:
            first.setdefault(row["auction_id"], (n, row))
        inserted = await connection.execute(
            insert(TRADES)
            .on_conflict_do_nothing(index_elements=["auction_id"])
            .returning(TRADES.c.id, TRADES.c.auction_id),
            [row for _, row in first.values()],
        )
        created = {auction_id: trade_id for trade_id, auction_id in inserted.all()}
        for auction_id, (n, _row) in first.items():
            results[n] = created.get(auction_id)  # None for the others: already traded

    return handler


Evidence = tuple[bytes, bytes]  # (the hub's signed request, the battery's signed answer)
_EVIDENCE_UPDATE = (
    sa.update(TRADES)
    .where(TRADES.c.id == sa.bindparam("target"))
    .values(evidence_request=sa.bindparam("request"), evidence_answer=sa.bindparam("answer"))
)


async def set_trades_status(
    connection: AsyncConnection,
    status: str,
    updated_ms: int,
    *,
    auction_ids: Sequence[int] = (),
    trade_ids: Sequence[int] = (),
    evidence: Mapping[int, Evidence] | None = None,
) -> list[int]:
    """Move trades (by auction or by id) from recorded/unverified to `status`, in the caller's
    transaction: one statement for all of them, and for verified ones their settlement outbox
    rows in the same transaction (void ones turn their auction terminated). `evidence`, by
    auction id (or by trade id when moving by id): the signed frames that decided a verified
    trade, kept with it. Returns the ids of the trades that moved (those already decided, or
    missing, stay as they are)."""
    if status not in TRADE_STATUSES:
        raise InvalidValueError(f"trade status must be one of {TRADE_STATUSES}, not {status!r}")
    if not auction_ids and not trade_ids:
        return []
    target = TRADES.c.auction_id.in_(auction_ids) if auction_ids else TRADES.c.id.in_(trade_ids)
    moved = (
        await connection.execute(
            sa.update(TRADES)
            .where(target, TRADES.c.status.in_(_OPEN_TRADE_STATUSES))
            .values(status=status)
            .returning(TRADES.c.id, TRADES.c.auction_id)
        )
    ).all()
    if moved and status == "verified" and evidence:
        frames = [
            {"target": trade_id, "request": found[0], "answer": found[1]}
            for trade_id, auction in moved
            if (found := evidence.get(auction if auction_ids else trade_id)) is not None
        ]
        if frames:
            await connection.execute(_EVIDENCE_UPDATE, frames)
    if moved and status == "verified":
        await connection.execute(
            sa.insert(SETTLEMENTS),
            [
                {"trade_id": trade_id, "status": "pending", "attempts": 0, "updated_ms": updated_ms}
                for trade_id, _auction in moved
            ],
        )
    elif moved and status == "void":  # an auction whose trade never happened did not clear
        await connection.execute(
            sa.update(AUCTIONS)
            .where(
                AUCTIONS.c.id.in_([auction for _trade, auction in moved]),
                AUCTIONS.c.status == "cleared",
            )
            .values(status="terminated", clearing_price_mc=None, winner_id=None, energy_wh=None)
        )
    return [trade_id for trade_id, _auction in moved]


def _check_settlement_status(status: str) -> None:
    if status not in SETTLEMENT_STATUSES:
        raise InvalidValueError(
            f"settlement status must be one of {SETTLEMENT_STATUSES}, not {status!r}"
        )


class TradeLedger(StoreParts):
    """Trades written before BidConfirm leaves the hub, their status (only a trade the battery
    proved counts), and the settlement progress of verified ones."""

    async def record_trade(
        self,
        *,
        auction_id: int,
        device_id: int,
        bidder_id: int,
        price_mc: int,
        energy_wh: int,
        reserve_mc: int,
        confirmed_ms: int,
    ) -> tuple[TradeRow, bool]:
        """Durably record the trade of an auction, status 'recorded'; returns (trade, created).

        Committed (fsynced) before it returns, so BidConfirm may leave the hub afterwards. One
        trade per auction: a retry (e.g. after a crash) returns the stored trade and False. It
        counts, and gets its settlement queued, only when the battery proves it (close_auction
        with trade_status, or resolve_trade). The auction stays open until close_auction: after
        a crash, an open auction with a trade is one whose battery must be asked.
        """
        check_ints(
            device_id=device_id,
            bidder_id=bidder_id,
            price_mc=price_mc,
            energy_wh=energy_wh,
            reserve_mc=reserve_mc,
            confirmed_ms=confirmed_ms,
        )
        if not isinstance(auction_id, int) or not 0 < auction_id < INT32:
            raise UnknownAuctionError(
                f"cannot record a trade for auction {auction_id!r}: no such auction"
            )
        new_trade: dict[str, Any] = {
            "auction_id": auction_id,
            "device_id": device_id,
            "bidder_id": bidder_id,
            "price_mc": price_mc,
            "energy_wh": energy_wh,
            "reserve_mc": reserve_mc,
            "confirmed_ms": confirmed_ms,
        }

        async def insert_trade(connection: AsyncConnection) -> int | None:
            # A retry must not spoil a shared transaction with a UNIQUE violation.
            result = await connection.execute(
                self._db.insert(TRADES)
                .values(new_trade)
                .on_conflict_do_nothing(index_elements=["auction_id"])
                .returning(TRADES.c.id)
            )
            trade_id = result.scalar_one_or_none()
            if trade_id is not None and not isinstance(trade_id, int):
                raise StoreError(f"the database returned no id for the trade ({self._db.safe_url})")
            return trade_id  # None: the auction already has its trade

        try:
            trade_id = await self._group.write(insert_trade, ("trades", new_trade))
            if trade_id is None:
                raise _AlreadyTraded(auction_id)
        except (IntegrityError, _AlreadyTraded) as err:
            # Already traded (a retry), or the auction does not exist (foreign key).
            existing = await self.get_trade(auction_id)
            if existing is None:
                raise UnknownAuctionError(
                    f"cannot record a trade for auction {auction_id}: no such auction"
                ) from err
            if (existing.bidder_id, existing.price_mc, existing.energy_wh) != (
                bidder_id,
                price_mc,
                energy_wh,
            ):
                log.warning(
                    "auction %d already traded with bidder %d at %d mc/kWh for %d Wh; "
                    "kept it, ignored bidder %d at %d for %d",
                    auction_id,
                    existing.bidder_id,
                    existing.price_mc,
                    existing.energy_wh,
                    bidder_id,
                    price_mc,
                    energy_wh,
                )
            return existing, False
        return TradeRow(id=trade_id, **new_trade, status="recorded"), True

    async def get_trade(self, auction_id: int) -> TradeRow | None:
        """The trade of one auction, or None (e.g. to resume an auction left open by a crash)."""
        rows = await self._db.fetch(sa.select(TRADES).where(TRADES.c.auction_id == auction_id))
        return to_row(TradeRow, rows[0]) if rows else None

    async def list_trades(
        self, status: str | Iterable[str] | None = None, *, min_auction_id: int | None = None
    ) -> list[TradeRow]:
        """Trades (with one status, or any of several; default every trade; of auctions from
        `min_auction_id` on, if given), oldest first."""
        statement = sa.select(TRADES).order_by(TRADES.c.id)
        if min_auction_id is not None:
            statement = statement.where(TRADES.c.auction_id >= min_auction_id)
        if status is not None:
            wanted = (status,) if isinstance(status, str) else tuple(status)
            statement = statement.where(TRADES.c.status.in_(wanted))
        return [to_row(TradeRow, row) for row in await self._db.fetch(statement)]

    async def resolve_trade(self, trade_id: int, status: str,
                            evidence: Evidence | None = None) -> bool:
        """Decide a recorded or unverified trade from its battery's answer: 'verified' (then
        its settlement is queued in the same transaction, and `evidence`, the frames of the
        question and of the battery's answer, kept with it), 'void', or 'unverified'. Returns
        False if it was already decided (nothing changes)."""
        frames = {trade_id: evidence} if evidence is not None else None

        async def resolve(connection: AsyncConnection) -> list[int]:
            return await set_trades_status(connection, status, now_ms(), trade_ids=[trade_id],
                                           evidence=frames)

        if status not in TRADE_STATUSES:
            raise InvalidValueError(f"trade status must be one of {TRADE_STATUSES}, not {status!r}")
        return bool(await self._group.write(resolve))

    async def pending_settlements(
        self, limit: int = 100, *, statuses: Iterable[str] = ("pending",), after_trade_id: int = 0
    ) -> list[SettlementRow]:
        """Settlement outbox rows to work on, oldest trade first (from `after_trade_id` on:
        a worker pages through rows it cannot settle yet instead of reading them again).

        A settlement worker that restarts should also ask for 'submitted' rows (sent to the
        ledger before the restart) and check their signature before sending again.
        """
        wanted = tuple(statuses)
        for status in wanted:
            _check_settlement_status(status)
        rows = await self._db.fetch(
            sa.select(SETTLEMENTS)
            .where(SETTLEMENTS.c.status.in_(wanted), SETTLEMENTS.c.trade_id > after_trade_id)
            .order_by(SETTLEMENTS.c.trade_id)
            .limit(limit)
        )
        return [to_row(SettlementRow, row) for row in rows]

    async def list_settlements(self) -> list[SettlementRow]:
        """Every settlement outbox row, by trade id."""
        rows = await self._db.fetch(sa.select(SETTLEMENTS).order_by(SETTLEMENTS.c.trade_id))
        return [to_row(SettlementRow, row) for row in rows]

    async def mark_settlement(
        self,
        trade_id: int,
        *,
        status: str,
        signature: str | None = None,
        error: str | None = None,
        updated_ms: int | None = None,
    ) -> None:
        """Record settlement progress; 'submitted' counts one attempt.

        signature is kept unless a new one is given; error is replaced (None clears it).
        """
        await self.mark_settlements([trade_id], status=status, signature=signature, error=error,
                                    updated_ms=updated_ms)

    async def mark_settlements(
        self,
        trade_ids: Sequence[int],
        *,
        status: str,
        signature: str | None = None,
        error: str | None = None,
        updated_ms: int | None = None,
    ) -> None:
        """mark_settlement for several rows in one statement and one commit (e.g. the trades
        of one transaction). UnknownTradeError, and nothing changed, if a row is missing."""
        _check_settlement_status(status)
        if not trade_ids:
            return
        values: dict[str, Any] = {
            "status": status,
            "error": error,
            "updated_ms": now_ms() if updated_ms is None else updated_ms,
        }
        if signature is not None:
            values["signature"] = signature
        if status == "submitted":
            values["attempts"] = SETTLEMENTS.c.attempts + 1
        wanted = sorted(set(trade_ids))
        async with self._db.transaction() as connection:
            result = await connection.execute(
                sa.update(SETTLEMENTS).where(SETTLEMENTS.c.trade_id.in_(wanted)).values(values)
            )
            if result.rowcount != len(wanted):
                which = (f"trade {wanted[0]}" if len(wanted) == 1
                         else f"some of trades {wanted[:10]}")
                raise UnknownTradeError(f"no settlement outbox row for {which}")
