"""Dispute commands under /api/v1/settlements (operator keys only): open a dispute of a settled
trade for its buyer or seller, resolve it as the market authority (hub.settlement.disputes).
The ledger answers; its refusals come back as 409 with the program's error name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol

from litestar import Request, Response, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_200_OK
from litestar.types import Guard

from hub.gateway.auth import SECURITY, principal_of

__all__ = ["DisputeBody", "ResolveBody", "SettlementSource", "dispute_handlers"]


class SettlementSource(Protocol):
    """What the dispute commands act on."""

    @property
    def settlement(self) -> Any:
        """The running SettlementService (None when settlement is off or did not start)."""


@dataclass
class DisputeBody:
    """Body of POST /api/v1/settlements/{trade_id}/dispute."""

    by: Literal["buyer", "seller"] = "buyer"
    reason: str | None = None


@dataclass
class ResolveBody:
    """Body of POST /api/v1/settlements/{trade_id}/resolve: `refund_mc` (0 = the dispute was
    unfounded) or `full_refund: true` (the trade's whole amount)."""

    refund_mc: int | None = None
    full_refund: bool = False


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _answer(_request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    status = int(getattr(exc, "status", 500))
    return Response({"status_code": status, "detail": str(exc)}, status_code=status)


def dispute_handlers(source: SettlementSource, guards: list[Guard]) -> list[HTTPRouteHandler]:
    """The dispute routes, each behind `guards` (the operator guard)."""
    from hub.settlement.disputes import DisputeError

    def disputes() -> Any:
        elsewhere = getattr(source, "settlement_elsewhere", None)
        if elsewhere:  # hub workers: settlement runs on the site's leader
            raise _Refused(503, elsewhere)
        service = source.settlement
        if service is None:
            raise _Refused(
                503,
                "settlement is not running on this hub (ETP_SETTLEMENT_NETWORK=off "
                "or it could not start: see /api/v1/status, settlement.last_error)",
            )
        return service.disputes

    def who(request: Request[Any, Any, Any]) -> dict[str, Any]:
        principal = principal_of(request)
        return {"key_id": principal.key_id, "name": principal.name}

    common: dict[str, Any] = {
        "guards": guards,
        "security": SECURITY,
        "status_code": HTTP_200_OK,
        "exception_handlers": {DisputeError: _answer, _Refused: _answer},
    }

    @post("/api/v1/settlements/{trade_id:int}/dispute", **common)
    async def open_dispute(
        request: Request[Any, Any, Any], trade_id: FromPath[int], data: JSONBody[DisputeBody]
    ) -> dict[str, Any]:
        """The trade's buyer (aggregator) or seller (battery owner) disputes it, within the
        market's dispute window; the hub signs with that party's key (409 if it holds none,
        if the trade is not settled, or if the program refuses: DisputeWindowClosed,
        DisputeNotAllowed...). A `settlement_changed` event with status "disputed"."""
        reason = (data.reason or "").strip()[:500] or None
        result: dict[str, Any] = await disputes().open(
            trade_id, data.by, reason, actor=who(request)
        )
        return result

    @post("/api/v1/settlements/{trade_id:int}/resolve", **common)
    async def resolve_dispute(
        request: Request[Any, Any, Any], trade_id: FromPath[int], data: JSONBody[ResolveBody]
    ) -> dict[str, Any]:
        """The market authority resolves the trade's open dispute: `refund_mc` > 0 refunds the
        buyer that much (the seller loses reputation), 0 finds it unfounded (the disputer
        loses reputation), `full_refund` refunds the whole amount. Status "refunded" or
        "upheld"; 409 NoOpenDispute, RefundTooLarge... from the program."""
        if data.full_refund == (data.refund_mc is not None):
            raise _Refused(
                400, "give exactly one of refund_mc (0 = unfounded) and full_refund: true"
            )
        if data.refund_mc is not None and data.refund_mc < 0:
            raise _Refused(400, "refund_mc cannot be negative")
        result: dict[str, Any] = await disputes().resolve(
            trade_id, data.refund_mc, actor=who(request)
        )
        return result

    return [open_dispute, resolve_dispute]
