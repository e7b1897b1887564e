"""Alerts under /api/v1: the list (viewer keys; newest first unless asked otherwise) and
acknowledging one (operator keys), which is an `alert_acknowledged` event naming the key."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

from litestar import Request, get, post
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NotFoundException, ServiceUnavailableException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK
from litestar.types import Guard

from hub.alerts import Alerts
from hub.gateway.auth import SECURITY, principal_of
from hub.gateway.resources import (
    Cursor,
    DeviceIds,
    FromMs,
    Limit,
    Order,
    Sort,
    ToMs,
    Window,
    ids,
)
from hub.store import ALERT_KINDS, InvalidQueryError, Store, UnknownAlertError
from hub.store.models import alert_view

__all__ = ["AlertSource", "alert_handlers"]


class AlertSource(Protocol):
    """What the alert routes read and act on."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""

    @property
    def alerts(self) -> Alerts | None:
        """The hub's alert service (None before it started)."""


def newest_first(
    from_ms: FromMs = None, to_ms: ToMs = None, sort: Sort = "id", order: Order = "desc",
    limit: Limit = 100, cursor: Cursor = None,
) -> Window:
    """The list parameters, newest first by default."""
    return Window(from_ms, to_ms, sort, order, limit, cursor)


States = Annotated[
    list[Literal["open", "acknowledged"]] | None,
    QueryParameter(name="state", description="only alerts in these states (repeat for several)"),
]  # `state` is a name Litestar keeps for the app's state: the argument is `states`
AlertKinds = Annotated[list[str] | None, ids(f"only these kinds: {', '.join(ALERT_KINDS)}")]
Severities = Annotated[list[Literal["critical", "warning"]] | None, ids("only these severities")]


def alert_handlers(
    source: AlertSource, viewer: list[Guard], operator: list[Guard]
) -> list[HTTPRouteHandler]:
    """GET /api/v1/alerts (behind `viewer`) and POST /api/v1/alerts/{id}/acknowledge (behind
    `operator`)."""

    def running() -> tuple[Store, Alerts]:
        store, alerts = source.store, source.alerts
        if store is None or not store.started or alerts is None:
            raise ServiceUnavailableException(detail="the hub is not running")
        return store, alerts

    @get("/api/v1/alerts", guards=viewer, security=SECURITY,
         dependencies={"window": Provide(newest_first, sync_to_thread=False)})
    async def list_alerts(
        window: NamedDependency[Window],
        states: States = None,
        kind: AlertKinds = None,
        severity: Severities = None,
        device_id: DeviceIds = None,
    ) -> dict[str, Any]:
        """Alerts, paged, newest first: `{"items": [...], "next_cursor": ...}`; time is
        `raised_ms`. An open alert counts its repeats (`count`, `last_ms`)."""
        store, _ = running()
        try:
            page = await store.list_page("alerts", window.query({
                "state": states, "kind": kind, "severity": severity, "device_id": device_id,
            }))
        except InvalidQueryError as exc:
            raise ValidationException(detail=str(exc)) from None
        return {"items": [alert_view(item.__getitem__) for item in page.items],
                "next_cursor": page.next_cursor}

    @post("/api/v1/alerts/{alert_id:int}/acknowledge", guards=operator, security=SECURITY,
          status_code=HTTP_200_OK)
    async def acknowledge(alert_id: FromPath[int], request: Request[Any, Any, Any]) -> Any:
        """Acknowledge an alert (an operator saw it): stored with the key and the time, and
        sent as an `alert_acknowledged` event. Again: no change. 404 if no such alert."""
        _, alerts = running()
        principal = principal_of(request)
        try:
            row = await alerts.acknowledge(alert_id, principal.key_id, principal.name)
        except UnknownAlertError as exc:
            raise NotFoundException(detail=str(exc)) from None
        return row.view()

    return [list_alerts, acknowledge]

