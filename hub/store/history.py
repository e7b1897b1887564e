"""Verified trades aggregated over time for history charts: per bucket of `bucket_ms`, the
count, energy, revenue, mean/min/max clearing price, mean reserve and premium, and the energy
each aggregator bought. Computed by the database (GROUP BY on the trades' time index), so a
chart of days of trading reads a few hundred rows, not every trade."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from hub.store.errors import InvalidValueError
from hub.store.models import TRADES
from hub.store.parts import StoreParts
from hub.store.validate import check_ints

__all__ = ["MAX_BUCKETS", "TradeHistory"]

MAX_BUCKETS = 2000


class TradeHistory(StoreParts):
    """Time-bucketed figures of verified trades."""

    async def trade_history(
        self, from_ms: int, to_ms: int, bucket_ms: int
    ) -> list[dict[str, Any]]:
        """Buckets [t, t + bucket_ms) from `from_ms` (aligned down to the bucket) to `to_ms`,
        oldest first; buckets without a trade are left out."""
        check_ints(from_ms=from_ms, to_ms=to_ms, bucket_ms=bucket_ms)
        if bucket_ms < 1000:
            raise InvalidValueError("bucket must be at least 1 s")
        if not 0 <= from_ms < to_ms:
            raise InvalidValueError("from_ms must be before to_ms (both ms since the epoch)")
        if (to_ms - from_ms) // bucket_ms > MAX_BUCKETS:
            raise InvalidValueError(
                f"at most {MAX_BUCKETS} buckets: widen the bucket or shorten the range"
            )
        t = TRADES.c
        bucket = t.confirmed_ms // bucket_ms  # floor division in SQLite and PostgreSQL
        start = from_ms - from_ms % bucket_ms
        # One scan, grouped by bucket and buyer; the buckets' figures are summed up here.
        rows = await self._db.fetch(
            sa.select(
                bucket.label("bucket"),
                t.bidder_id,
                sa.func.count().label("trades"),
                sa.func.sum(t.energy_wh).label("energy_wh"),
                sa.func.sum(t.price_mc * t.energy_wh).label("revenue_x1000"),
                sa.func.sum(t.price_mc).label("price_sum"),
                sa.func.min(t.price_mc).label("min_price"),
                sa.func.max(t.price_mc).label("max_price"),
                sa.func.sum(t.reserve_mc).label("reserve_sum"),
                sa.func.sum(
                    (t.price_mc - t.reserve_mc) * 100.0 / sa.func.nullif(t.reserve_mc, 0)
                ).label("premium_sum"),
                sa.func.count(sa.func.nullif(t.reserve_mc, 0)).label("premium_n"),
            )
            .where(t.status == "verified", t.confirmed_ms >= start, t.confirmed_ms < to_ms)
            .group_by(bucket, t.bidder_id)
        )
        sums: dict[int, dict[str, Any]] = {}
        for row in rows:
            b = sums.setdefault(int(row.bucket), {
                "trades": 0, "energy_wh": 0, "revenue_x1000": 0, "price_sum": 0,
                "min_price": row.min_price, "max_price": row.max_price, "reserve_sum": 0,
                "premium_sum": 0.0, "premium_n": 0, "by": {},
            })
            for name in ("trades", "energy_wh", "revenue_x1000", "price_sum", "reserve_sum",
                         "premium_n"):
                b[name] += int(getattr(row, name))
            b["premium_sum"] += float(row.premium_sum or 0.0)
            b["min_price"] = min(b["min_price"], row.min_price)
            b["max_price"] = max(b["max_price"], row.max_price)
            b["by"][str(row.bidder_id)] = int(row.energy_wh)
        return [
            {
                "t_ms": key * bucket_ms,
                "trades": b["trades"],
                "energy_wh": b["energy_wh"],
                "revenue_mc": b["revenue_x1000"] // 1000,
                "mean_price_mc": round(b["price_sum"] / b["trades"], 1),
                "min_price_mc": int(b["min_price"]),
                "max_price_mc": int(b["max_price"]),
                "mean_reserve_mc": round(b["reserve_sum"] / b["trades"], 1),
                "mean_premium_pct": (
                    round(b["premium_sum"] / b["premium_n"], 2) if b["premium_n"] else None
                ),
                "energy_wh_by_aggregator": b["by"],
            }
            for key, b in sorted(sums.items())
        ]
