"""GET /api/v1/competition: what competition earned battery owners over the most recent
auctions — the competitive-pricing report (hub.report) on a window of the store, for the
dashboard's overview. The report replays the recorded offers with every aggregator and with
the best-funded one alone; that costs CPU (about 0.2 s per 1,000 auctions here), so one answer
per window size is kept for `CACHE_S` and one computation runs at a time, in a worker thread."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any, Protocol

from litestar import get
from litestar.exceptions import ServiceUnavailableException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.types import Guard

from hub.gateway.auth import SECURITY
from hub.report import NoReportDataError
from hub.report.analysis import analyse
from hub.report.inputs import load_report_input
from hub.settings import Settings
from hub.store import Store
from shared_etp.compat import now_ms

__all__ = ["CACHE_S", "competition_handler"]

CACHE_S = 30.0
_KEPT = ("auctions", "cleared", "cleared_share", "energy_sold_wh", "revenue_mc",
         "mean_reserve_mc", "mean_clearing_mc", "premium_mean_pct", "premium_median_pct",
         "above_reserve_share", "improvement", "competitive", "single",
         "counterfactual_aggregator", "mechanism", "seed")


class CompetitionSource(Protocol):
    """What the route reads."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""


def competition_handler(
    settings: Settings, source: CompetitionSource, guards: list[Guard]
) -> HTTPRouteHandler:
    """The route, behind `guards` (the viewer guard)."""
    cache: dict[int, tuple[float, dict[str, Any]]] = {}
    lock = asyncio.Lock()

    async def compute(store: Store, window: int) -> dict[str, Any]:
        report = await load_report_input(store, last_auctions=window)
        started = time.perf_counter()
        try:
            data = await asyncio.to_thread(
                analyse, report, seed=settings.seed, aggregators=report.aggregators,
                rules={"max_rounds": settings.max_rounds},
                trading_period_ms=settings.trading_period_ms,
            )
        except NoReportDataError as exc:
            return {"available": False, "reason": str(exc), "window": window,
                    "computed_ms": now_ms()}
        body = {name: value for name, value in data.as_dict().items() if name in _KEPT}
        times = [a.opened_ms for a in report.auctions]
        return {
            "available": True, "window": window, "from_ms": min(times), "to_ms": max(times),
            **body, "computed_ms": now_ms(),
            "compute_s": round(time.perf_counter() - started, 3),
        }

    @get("/api/v1/competition", guards=guards, security=SECURITY)
    async def competition(
        auctions: Annotated[int, Parameter(ge=100, le=10_000, description="how many of the most "
                                           "recent auctions to analyse")] = 1000,
    ) -> dict[str, Any]:
        """Clearing prices vs reserve over the most recent auctions, and the improvement over
        a single-aggregator counterfactual on the same offers (`improvement`: percent and
        points); recomputed at most every 30 s per window (`computed_ms` says when)."""
        store = source.store
        if store is None or not store.started:
            raise ServiceUnavailableException(detail="the hub's store is not running")
        async with lock:
            kept = cache.get(auctions)
            if kept is None or time.monotonic() - kept[0] > CACHE_S:
                kept = cache[auctions] = (time.monotonic(), await compute(store, auctions))
        return kept[1]

    return competition
