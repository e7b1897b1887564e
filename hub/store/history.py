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
        where = (t.status == "verified", t.confirmed_ms >= start, t.confirmed_ms < to_ms)
        totals = await self._db.fetch(
            sa.select(
                bucket.label("bucket"),
                sa.func.count().label("trades"),
                sa.func.sum(t.energy_wh).label("energy_wh"),
                sa.func.sum(t.price_mc * t.energy_wh).label("revenue_x1000"),
                sa.func.avg(t.price_mc).label("mean_price_mc"),
                sa.func.min(t.price_mc).label("min_price_mc"),
                sa.func.max(t.price_mc).label("max_price_mc"),
                sa.func.avg(t.reserve_mc).label("mean_reserve_mc"),
                sa.func.avg(
                    (t.price_mc - t.reserve_mc) * 100.0 / sa.func.nullif(t.reserve_mc, 0)
                ).label("mean_premium_pct"),
            ).where(*where).group_by(bucket).order_by(bucket)
        )
        shares = await self._db.fetch(
            sa.select(bucket.label("bucket"), t.bidder_id, sa.func.sum(t.energy_wh).label("wh"))
            .where(*where).group_by(bucket, t.bidder_id)
        )
        by_bucket: dict[int, dict[str, int]] = {}
        for share in shares:
            by_bucket.setdefault(int(share.bucket), {})[str(share.bidder_id)] = int(share.wh)
        return [
            {
                "t_ms": int(row.bucket) * bucket_ms,
                "trades": int(row.trades),
                "energy_wh": int(row.energy_wh),
                "revenue_mc": int(row.revenue_x1000) // 1000,
                "mean_price_mc": round(float(row.mean_price_mc), 1),
                "min_price_mc": int(row.min_price_mc),
                "max_price_mc": int(row.max_price_mc),
                "mean_reserve_mc": round(float(row.mean_reserve_mc), 1),
                "mean_premium_pct": (
                    None if row.mean_premium_pct is None
                    else round(float(row.mean_premium_pct), 2)
                ),
                "energy_wh_by_aggregator": by_bucket.get(int(row.bucket), {}),
            }
            for row in totals
        ]
