"""Operator commands under /api/v1 (operator keys only): pause and resume trading, pause,
resume and re-parameterise an aggregator, take a battery out of service and back. Each takes
effect at the next scheduler tick and is recorded as an `operator_action` event
(hub.auctions.control carries them out)."""

from __future__ import annotations

from typing import Any, Protocol

from litestar import Request, Response, patch, post
from litestar.exceptions import ServiceUnavailableException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND
from litestar.types import Guard

from hub.auctions.control import InvalidChangeError, Operator, UnknownTargetError
from hub.gateway.auth import SECURITY, principal_of
from shared_etp.compat import now_ms

__all__ = ["OperatorSource", "operator_handlers"]


class OperatorSource(Protocol):
    """What the operator commands act on."""

    @property
    def operator(self) -> Operator | None:
        """The market's operator controls (None before the hub started)."""


def _refused(status: int) -> Any:
    """An exception handler answering `status` with the error's text (Litestar's error body)."""

    def handler(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
        return Response({"status_code": status, "detail": str(exc)}, status_code=status)

    return handler


def operator_handlers(source: OperatorSource, guards: list[Guard]) -> list[HTTPRouteHandler]:
    """The operator command routes, each behind `guards` (the operator guard)."""

    def operator() -> Operator:
        current = source.operator
        if current is None:
            raise ServiceUnavailableException(detail="the hub's market is not running")
        return current

    def who(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal = principal_of(request)
        return {"key_id": principal.key_id, "name": principal.name}

    common: dict[str, Any] = {
        "guards": guards, "security": SECURITY, "sync_to_thread": False,
        "status_code": HTTP_200_OK,
        # an unknown aggregator or battery: 404; a refused parameter change: 400
        "exception_handlers": {
            UnknownTargetError: _refused(HTTP_404_NOT_FOUND),
            InvalidChangeError: _refused(HTTP_400_BAD_REQUEST),
        },
    }

    @post("/api/v1/trading/pause", **common)
    def pause_trading(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Pause the whole site: no auction opens from the next scheduler tick; auctions
        already open finish (trades being confirmed included)."""
        return operator().pause_trading(who(request), now_ms())

    @post("/api/v1/trading/resume", **common)
    def resume_trading(request: Request[Any, Any, Any]) -> dict[str, Any]:
        """Trade again from the next scheduler tick."""
        return operator().resume_trading(who(request))

    @post("/api/v1/aggregators/{aggregator_id:int}/pause", **common)
    def pause_aggregator(
        request: Request[Any, Any, Any], aggregator_id: FromPath[int]
    ) -> dict[str, Any]:
        """The aggregator places no more bids (others go on); bids it holds stand."""
        return operator().pause_aggregator(who(request), aggregator_id)

    @post("/api/v1/aggregators/{aggregator_id:int}/resume", **common)
    def resume_aggregator(
        request: Request[Any, Any, Any], aggregator_id: FromPath[int]
    ) -> dict[str, Any]:
        """The aggregator bids again."""
        return operator().resume_aggregator(who(request), aggregator_id)

    @patch("/api/v1/aggregators/{aggregator_id:int}", **common)
    def update_aggregator(
        request: Request[Any, Any, Any],
        aggregator_id: FromPath[int],
        data: JSONBody[dict[str, Any]],
    ) -> dict[str, Any]:
        """Change the live aggregator's budget_mc, energy_requirement_wh, max_price_mc,
        min_purchase_wh, pace_step_wh and its strategy's parameters (`strategy_params`); all
        or nothing, 400 naming the first bad parameter. Its next bid uses them."""
        return operator().update_aggregator(who(request), aggregator_id, data)

    @post("/api/v1/batteries/{device_id:int}/out-of-service", **common)
    def out_of_service(request: Request[Any, Any, Any], device_id: FromPath[int]) -> dict[str, Any]:
        """No new auction for the battery (its current one finishes)."""
        return operator().set_in_service(who(request), device_id, False, now_ms())

    @post("/api/v1/batteries/{device_id:int}/in-service", **common)
    def in_service(request: Request[Any, Any, Any], device_id: FromPath[int]) -> dict[str, Any]:
        """The battery is auctioned again."""
        return operator().set_in_service(who(request), device_id, True, now_ms())

    return [
        pause_trading, resume_trading, pause_aggregator, resume_aggregator, update_aggregator,
        out_of_service, in_service,
    ]
