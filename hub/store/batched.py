"""Store API for rows written behind: bids, events (numbered) and metrics, and their reads."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from hub.store.errors import InvalidValueError
from hub.store.models import BID_OUTCOMES, BIDS, EVENTS, METRICS, BidRow, EventRow, MetricRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_json, check_text, to_row

__all__ = ["BatchedRows"]


class BatchedRows(StoreParts):
    """Bids, events and metrics: queued by sync calls (no await on the trading path), written
    by the background flusher; reads flush first so a caller sees its own rows."""

    @property
    def pending_writes(self) -> int:
        """Rows queued in memory, not yet committed (bids + events + metrics)."""
        return self._writes.pending

    @property
    def issued_event_seq(self) -> int:
        """The seq of the last event numbered by this process, or, before the first, the
        number just below the first one it will hand out (0 before `start()`)."""
        return self._sequence.last

    def record_bid(
        self,
        *,
        auction_id: int,
        bidder_id: int,
        price_mc: int,
        energy_wh: int,
        round: int,
        outcome: str,
        reason: int | None,
        ts_ms: int,
    ) -> None:
        """Queue a bid for the next batched write (outcome: sent|accepted|rejected|confirmed)."""
        self._writes.check_writable()
        if outcome not in BID_OUTCOMES:
            raise InvalidValueError(f"bid outcome must be one of {BID_OUTCOMES}, not {outcome!r}")
        check_ints(
            auction_id=auction_id,
            bidder_id=bidder_id,
            price_mc=price_mc,
            energy_wh=energy_wh,
            ts_ms=ts_ms,
        )
        check_ints(32, round=round, reason=reason)
        if ts_ms is None:
            raise InvalidValueError("ts_ms is required")
        self._writes.enqueue(
            "bids",
            {
                "auction_id": auction_id,
                "bidder_id": bidder_id,
                "price_mc": price_mc,
                "energy_wh": energy_wh,
                "round": round,
                "outcome": outcome,
                "reason": reason,
                "ts_ms": ts_ms,
            },
        )

    def record_event(
        self,
        kind: str,
        *,
        device_id: int | None = None,
        auction_id: int | None = None,
        payload: dict[str, Any] | None = None,
        ts_ms: int,
    ) -> int:
        """Queue an event for the next batched write; returns its sequence number.

        The number is site-wide, strictly increasing in call order within this process and
        never reused (see hub.store.sequence). payload must be a JSON-encodable dict. Most
        callers want `hub.events.EventLog.emit`, which also publishes the event in-process.
        With `shared_event_seq` (hub workers) the number is given when the row is written,
        and this returns 0.
        """
        self._writes.check_writable()
        check_text("event kind", kind, 64)
        check_ints(device_id=device_id, auction_id=auction_id, ts_ms=ts_ms)
        if ts_ms is None:
            raise InvalidValueError("ts_ms is required")
        check_json("event payload", payload)
        seq = None if self.shared_event_seq else self._sequence.next()
        self._writes.enqueue(
            "events",
            {
                "seq": seq,
                "kind": kind,
                "device_id": device_id,
                "auction_id": auction_id,
                "payload": payload,
                "ts_ms": ts_ms,
            },
        )
        return seq or 0

    def record_metric(
        self, name: str, value: float, *, labels: dict[str, Any] | None = None, ts_ms: int
    ) -> None:
        """Queue a metric sample for the next batched write."""
        self._writes.check_writable()
        check_text("metric name", name, 128)
        check_ints(ts_ms=ts_ms)
        if ts_ms is None or not isinstance(value, int | float) or isinstance(value, bool):
            raise InvalidValueError(f"metric {name}: value must be a number and ts_ms an int")
        check_json("metric labels", labels)
        self._writes.enqueue(
            "metrics", {"name": name, "value": float(value), "labels": labels, "ts_ms": ts_ms}
        )

    async def flush(self) -> None:
        """Commit every queued bid, event and metric now (one transaction)."""
        await self._writes.flush()

    async def list_bids(
        self, auction_id: int | None = None, *, min_auction_id: int | None = None
    ) -> list[BidRow]:
        """Bids (of one auction, or of auctions from `min_auction_id` on, if given), in the
        order recorded; flushes queued writes first."""
        await self._writes.flush_before_read()
        statement = sa.select(BIDS).order_by(BIDS.c.id)
        if auction_id is not None:
            statement = statement.where(BIDS.c.auction_id == auction_id)
        if min_auction_id is not None:
            statement = statement.where(BIDS.c.auction_id >= min_auction_id)
        return [to_row(BidRow, row) for row in await self._db.fetch(statement)]

    def events_after_statement(
        self, after_seq: int = 0, *, limit: int = 500, kinds: Iterable[str] | None = None
    ) -> sa.Select[Any]:
        """The SELECT `list_events` runs (a range scan of the unique index ix_events_seq)."""
        check_ints(after_seq=after_seq)
        statement = sa.select(EVENTS).where(EVENTS.c.seq > after_seq)
        if kinds is not None:
            statement = statement.where(EVENTS.c.kind.in_(sorted(set(kinds))))
        return statement.order_by(EVENTS.c.seq).limit(limit)

    async def list_events(
        self,
        after_seq: int = 0,
        *,
        limit: int = 500,
        kinds: Iterable[str] | None = None,
        since_id: int | None = None,
        flush: bool = True,
    ) -> list[EventRow]:
        """Events with seq > after_seq (of the given kinds), by seq; flushes queued ones first
        (unless `flush` is False: a poller reading what every process committed).

        Page with the last seq returned. `since_id` (row id) is the older paging key, kept
        for existing callers; new code pages by seq.
        """
        if flush:
            await self._writes.flush_before_read()
        statement = self.events_after_statement(after_seq, limit=limit, kinds=kinds)
        if since_id is not None:
            statement = statement.where(EVENTS.c.id > since_id)
        return [
            EventRow(
                id=row.id,
                seq=row.seq,
                kind=row.kind,
                device_id=row.device_id,
                auction_id=row.auction_id,
                payload=row.payload or {},
                ts_ms=row.ts_ms,
            )
            for row in await self._db.fetch(statement)
        ]

    async def last_event_seq(self) -> int:
        """The highest event seq stored (0: none), after writing queued events."""
        await self._writes.flush_before_read()
        rows = await self._db.fetch(sa.select(sa.func.max(EVENTS.c.seq)))
        return int(rows[0][0] or 0)

    async def list_metrics(
        self, name: str | None = None, *, since_ms: int = 0, limit: int = 1000
    ) -> list[MetricRow]:
        """Metric samples (of one name, if given) at or after since_ms, oldest first."""
        await self._writes.flush_before_read()
        statement = sa.select(METRICS).where(METRICS.c.ts_ms >= since_ms)
        if name is not None:
            statement = statement.where(METRICS.c.name == name)
        rows = await self._db.fetch(statement.order_by(METRICS.c.id).limit(limit))
        return [
            MetricRow(
                id=row.id, name=row.name, value=row.value, labels=row.labels or {}, ts_ms=row.ts_ms
            )
            for row in rows
        ]
