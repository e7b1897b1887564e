"""GET /api/v1/history: verified trades per time bucket (hub.store.history) for the
dashboard's history charts — clearing price and premium over time, each aggregator's share."""

from __future__ import annotations

import time
from typing import Annotated, Any, Protocol

from litestar import get
from litestar.exceptions import ServiceUnavailableException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.types import Guard

from hub.gateway.auth import SECURITY
from hub.store import InvalidValueError, Store
from shared_etp.compat import now_ms

__all__ = ["CACHE_S", "history_handler"]

# Answers are kept this long per (range, bucket) with the range's end rounded up to a bucket:
# dashboards asking "the last 24 h" every minute share one scan of the trades (the 24 h view
# of 100,000 trades is one GROUP BY over them, ~50 ms in SQLite here: `etp bench gateway`).
CACHE_S = 15.0
_CACHE_ENTRIES = 64


class HistorySource(Protocol):
    """What the route reads."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""


def history_handler(source: HistorySource, guards: list[Guard]) -> HTTPRouteHandler:
    """The route, behind `guards` (the viewer guard)."""
    cache: dict[tuple[int, int, int], tuple[float, list[dict[str, Any]]]] = {}

    async def buckets_of(store: Store, start: int, end: int, bucket_ms: int) -> Any:
        key = (start // bucket_ms, -(-end // bucket_ms), bucket_ms)
        kept = cache.get(key)
        if kept is not None and time.monotonic() - kept[0] < CACHE_S:
            return kept[1]
        buckets = await store.trade_history(start, key[1] * bucket_ms, bucket_ms)
        if len(cache) >= _CACHE_ENTRIES:
            cache.clear()
        cache[key] = (time.monotonic(), buckets)
        return buckets

    @get("/api/v1/history", guards=guards, security=SECURITY)
    async def history(
        from_ms: Annotated[int | None, Parameter(ge=0, description="start (ms since the "
                                                 "epoch; default: an hour before to_ms)")] = None,
        to_ms: Annotated[int | None, Parameter(ge=0, description="end, exclusive "
                                               "(default: now)")] = None,
        bucket_s: Annotated[int, Parameter(ge=1, le=86_400 * 7, description="bucket width "
                                           "in seconds (at most 2,000 buckets)")] = 60,
    ) -> dict[str, Any]:
        """Verified trades per bucket, oldest first: count, energy, revenue, mean/min/max
        clearing price, mean reserve, mean premium over reserve (percent) and the energy each
        aggregator bought (by aggregator id). Buckets without trades are left out; the last
        bucket runs to its end. An answer may be up to 15 s old."""
        store = source.store
        if store is None or not store.started:
            raise ServiceUnavailableException(detail="the hub's store is not running")
        end = now_ms() if to_ms is None else to_ms
        start = max(0, end - 3_600_000) if from_ms is None else from_ms
        try:
            buckets = await buckets_of(store, start, end, bucket_s * 1000)
        except InvalidValueError as exc:
            raise ValidationException(detail=str(exc)) from None
        return {"from_ms": start, "to_ms": end, "bucket_s": bucket_s, "buckets": buckets}

    return history
