"""Operator commands under /api/v1 (operator keys only): pause and resume trading, pause,
resume and re-parameterise an aggregator, take a battery out of service and back. Each takes
effect at the next scheduler tick and is recorded as an `operator_action` event
(hub.auctions.control carries them out)."""

from __future__ import annotations

from typing import Any, Protocol

from litestar import Request, patch, post
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
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
        try:
            return operator().pause_aggregator(who(request), aggregator_id)
        except UnknownTargetError as exc:
            raise NotFoundException(detail=str(exc)) from None

    @post("/api/v1/aggregators/{aggregator_id:int}/resume", **common)
    def resume_aggregator(
        request: Request[Any, Any, Any], aggregator_id: FromPath[int]
    ) -> dict[str, Any]:
        """The aggregator bids again."""
        try:
            return operator().resume_aggregator(who(request), aggregator_id)
        except UnknownTargetError as exc:
            raise NotFoundException(detail=str(exc)) from None

    @patch("/api/v1/aggregators/{aggregator_id:int}", **common)
    def update_aggregator(
        request: Request[Any, Any, Any],
        aggregator_id: FromPath[int],
        data: JSONBody[dict[str, Any]],
    ) -> dict[str, Any]:
        """Change the live aggregator's budget_mc, energy_requirement_wh, max_price_mc,
        min_purchase_wh, pace_step_wh and its strategy's parameters (`strategy_params`); all
        or nothing, 400 naming the first bad parameter. Its next bid uses them."""
        try:
            return operator().update_aggregator(who(request), aggregator_id, data)
        except UnknownTargetError as exc:
            raise NotFoundException(detail=str(exc)) from None
        except InvalidChangeError as exc:
            raise ValidationException(detail=str(exc)) from None

    @post("/api/v1/batteries/{device_id:int}/out-of-service", **common)
    def out_of_service(request: Request[Any, Any, Any], device_id: FromPath[int]) -> dict[str, Any]:
        """No new auction for the battery (its current one finishes)."""
        try:
            return operator().set_in_service(who(request), device_id, False, now_ms())
        except UnknownTargetError as exc:
            raise NotFoundException(detail=str(exc)) from None

    @post("/api/v1/batteries/{device_id:int}/in-service", **common)
    def in_service(request: Request[Any, Any, Any], device_id: FromPath[int]) -> dict[str, Any]:
        """The battery is auctioned again."""
        try:
            return operator().set_in_service(who(request), device_id, True, now_ms())
        except UnknownTargetError as exc:
            raise NotFoundException(detail=str(exc)) from None

    return [
        pause_trading, resume_trading, pause_aggregator, resume_aggregator, update_aggregator,
        out_of_service, in_service,
    ]
