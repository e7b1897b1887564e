"""Store benchmark: how many durable trades and batched bids/events per second a database takes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

from hub.store.store import Store

__all__ = ["StoreBenchResult", "run_store_benchmark"]


@dataclass(frozen=True)
class StoreBenchResult:
    """Measured throughput of one store benchmark run."""

    database: str
    trades: int
    trades_per_s: float
    trade_p50_ms: float
    trade_p99_ms: float
    concurrent_trades_per_s: float
    bids: int
    bids_per_s: float
    events: int
    events_per_s: float
    device_upserts_per_s: float

    def as_dict(self) -> dict[str, float | int | str]:
        """Plain dict for JSON output."""
        return asdict(self)


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run_store_benchmark(
    database_url: str, *, trades: int = 300, bids: int = 50_000, concurrency: int = 16
) -> StoreBenchResult:
    """Measure the store on `database_url` (which should be an empty, throwaway database).

    trades/s: open an auction + record its trade, one after another (each trade committed and
    fsynced before the next). concurrent trades/s: the same with `concurrency` auctions at
    once. bids/s and events/s: record_* then flush, end to end until committed.
    """
    now_ms = time.time_ns() // 1_000_000
    async with Store(database_url) as store:
        device_started = time.perf_counter()
        upserts = max(100, trades)
        for number in range(upserts):
            await store.upsert_device(
                number % 999 + 1, "bench", online=True, soc=5000, seen_ms=now_ms + number
            )
        device_rate = upserts / (time.perf_counter() - device_started)

        auction_ids = [
            await store.open_auction(
                device_id=number % 999 + 1,
                site="bench",
                mechanism="ascending",
                lot_wh=1000,
                reserve_mc=10_000,
                opened_ms=now_ms,
            )
            for number in range(trades * 2)
        ]

        latencies_ms: list[float] = []
        started = time.perf_counter()
        for auction_id in auction_ids[:trades]:
            began = time.perf_counter()
            await store.record_trade(
                auction_id=auction_id,
                device_id=1,
                bidder_id=1000,
                price_mc=12_000,
                energy_wh=1000,
                reserve_mc=10_000,
                confirmed_ms=now_ms,
            )
            latencies_ms.append((time.perf_counter() - began) * 1000)
        trades_per_s = trades / (time.perf_counter() - started)

        pending = iter(auction_ids[trades:])

        async def trade_worker() -> None:
            for auction_id in pending:
                await store.record_trade(
                    auction_id=auction_id,
                    device_id=1,
                    bidder_id=1001,
                    price_mc=12_500,
                    energy_wh=1000,
                    reserve_mc=10_000,
                    confirmed_ms=now_ms,
                )

        started = time.perf_counter()
        await asyncio.gather(*(trade_worker() for _ in range(concurrency)))
        concurrent_per_s = trades / (time.perf_counter() - started)

        started = time.perf_counter()
        for number in range(bids):
            store.record_bid(
                auction_id=auction_ids[number % len(auction_ids)],
                bidder_id=1000 + number % 50,
                price_mc=10_000 + number,
                energy_wh=1000,
                round=number % 12,
                outcome="sent",
                reason=None,
                ts_ms=now_ms + number,
            )
            if number % 2000 == 1999:
                await asyncio.sleep(0)  # let the flusher run, as in the hub
        await store.flush()
        bids_per_s = bids / (time.perf_counter() - started)

        events = bids // 5
        started = time.perf_counter()
        for number in range(events):
            store.record_event(
                "bid_received",
                device_id=number % 999 + 1,
                auction_id=auction_ids[number % len(auction_ids)],
                payload={"price": 10_000 + number, "bidder": 1000 + number % 50},
                ts_ms=now_ms + number,
            )
            if number % 2000 == 1999:
                await asyncio.sleep(0)
        await store.flush()
        events_per_s = events / (time.perf_counter() - started)

        return StoreBenchResult(
            database=store.dialect,
            trades=trades,
            trades_per_s=round(trades_per_s, 1),
            trade_p50_ms=round(_percentile(latencies_ms, 0.50), 3),
            trade_p99_ms=round(_percentile(latencies_ms, 0.99), 3),
            concurrent_trades_per_s=round(concurrent_per_s, 1),
            bids=bids,
            bids_per_s=round(bids_per_s, 1),
            events=events,
            events_per_s=round(events_per_s, 1),
            device_upserts_per_s=round(device_rate, 1),
        )
