"""Verified trades per time bucket (Store.trade_history) on SQLite and PostgreSQL: sums,
means, extremes and each aggregator's energy per bucket; unverified trades and trades outside
the range left out; ranges too fine refused. And the route over a running hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.store import InvalidValueError, Store
from hub.store.models import AUCTIONS, TRADES
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub

# (time ms, bidder, price mc/kWh, energy Wh, reserve mc/kWh, status)
TRADES_ROWS = [
    (60_000, 1, 30_000, 1000, 20_000, "verified"),
    (61_000, 2, 20_000, 3000, 20_000, "verified"),
    (119_999, 1, 25_000, 1000, 25_000, "verified"),
    (90_000, 2, 99_000, 1000, 10_000, "unverified"),  # does not count
    (180_000, 2, 22_000, 2000, 20_000, "verified"),
    (240_000, 1, 50_000, 1000, 20_000, "verified"),  # at to_ms: outside
]


async def _seed(store: Store) -> None:
    auctions, trades = [], []
    for n, (at, bidder, price, energy, reserve, status) in enumerate(TRADES_ROWS, start=1):
        auctions.append({"id": n, "device_id": n, "site": "s", "mechanism": "ascending",
                         "lot_wh": energy, "reserve_mc": reserve, "status": "cleared",
                         "opened_ms": at - 10, "closed_ms": at})
        trades.append({"id": n, "auction_id": n, "device_id": n, "bidder_id": bidder,
                       "price_mc": price, "energy_wh": energy, "reserve_mc": reserve,
                       "confirmed_ms": at, "status": status})
    async with store.sql.begin() as connection:
        await connection.execute(sa.insert(AUCTIONS), auctions)
        await connection.execute(sa.insert(TRADES), trades)


async def test_trades_per_bucket(store: Store) -> None:
    await _seed(store)
    buckets = await store.trade_history(60_500, 240_000, 60_000)  # from is aligned down
    assert [b["t_ms"] for b in buckets] == [60_000, 180_000]  # 120 000: no trade, left out
    first, second = buckets
    assert first["trades"] == 3 and first["energy_wh"] == 5000
    assert first["revenue_mc"] == (30_000 * 1000 + 20_000 * 3000 + 25_000 * 1000) // 1000
    assert first["mean_price_mc"] == 25_000 and first["mean_reserve_mc"] == pytest.approx(
        21_666.7)
    assert (first["min_price_mc"], first["max_price_mc"]) == (20_000, 30_000)
    assert first["mean_premium_pct"] == pytest.approx((50 + 0 + 0) / 3, abs=0.01)
    assert first["energy_wh_by_aggregator"] == {"1": 2000, "2": 3000}
    assert second["trades"] == 1 and second["mean_premium_pct"] == 10.0
    with pytest.raises(InvalidValueError, match="at most"):
        await store.trade_history(0, 10_000_000, 1000)
    with pytest.raises(InvalidValueError):
        await store.trade_history(5000, 1000, 1000)


async def test_history_route(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path)
    async with running_hub(settings) as hub:
        assert hub.store is not None
        await _seed(hub.store)
        key = await api_key(hub)
        url = f"{hub.http_url}/api/v1/history"
        status, body = await asyncio.to_thread(
            get_json, url + "?from_ms=0&to_ms=240000&bucket_s=120", key)
        assert status == 200 and [b["trades"] for b in body["buckets"]] == [3, 1]
        assert body["bucket_s"] == 120
        status, _ = await asyncio.to_thread(get_json, url + "?from_ms=0&to_ms=99999999&bucket_s=1",
                                            key)
        assert status == 400
        status, recent = await asyncio.to_thread(get_json, url, key)  # the last hour: empty
        assert status == 200 and recent["buckets"] == []
