"""GET /api/v1/history: verified trades per time bucket (hub.store.history) for the
dashboard's history charts — clearing price and premium over time, each aggregator's share."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from litestar import get
from litestar.exceptions import ServiceUnavailableException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.types import Guard

from hub.gateway.auth import SECURITY
from hub.store import InvalidValueError, Store
from shared_etp.compat import now_ms

__all__ = ["history_handler"]


class HistorySource(Protocol):
    """What the route reads."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""


def history_handler(source: HistorySource, guards: list[Guard]) -> HTTPRouteHandler:
    """The route, behind `guards` (the viewer guard)."""

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
        aggregator bought (by aggregator id). Buckets without trades are left out."""
        store = source.store
        if store is None or not store.started:
            raise ServiceUnavailableException(detail="the hub's store is not running")
        end = now_ms() if to_ms is None else to_ms
        start = max(0, end - 3_600_000) if from_ms is None else from_ms
        try:
            buckets = await store.trade_history(start, end, bucket_s * 1000)
        except InvalidValueError as exc:
            raise ValidationException(detail=str(exc)) from None
        return {"from_ms": start, "to_ms": end, "bucket_s": bucket_s, "buckets": buckets}

    return history
