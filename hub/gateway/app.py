"""Litestar app factory: open health probes; status, devices, events, whoami, WebSocket
tickets, the REST resources (hub.gateway.resources), the WebSocket /ws (hub.gateway.ws) and
Prometheus /metrics (hub.gateway.prometheus) for viewer keys; API key management and operator
commands (hub.gateway.operator) for operator keys; the OpenAPI schema at /schema; the
dashboard's static build at / (hub.gateway.static)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from litestar import Litestar, Request, Response, delete, get, post
from litestar.exceptions import NotFoundException, ValidationException
from litestar.params import FromPath, JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from hub.auth import ApiKeyAuthenticator, Role, WsTickets, key_view
from hub.gateway.alerts import AlertSource, alert_handlers
from hub.gateway.audit import security_audit_handler
from hub.gateway.auth import SECURITY, openapi_config, principal_of, requires
from hub.gateway.competition import competition_handler
from hub.gateway.history import history_handler
from hub.gateway.operator import OperatorSource, operator_handlers
from hub.gateway.prometheus import MetricsSource, metrics_handler
from hub.gateway.protect import cors_config, rate_limits
from hub.gateway.resources import ResourceSource, events_in_range, resource_handlers
from hub.gateway.settlements import SettlementSource, dispute_handlers
from hub.gateway.static import static_handlers
from hub.gateway.ws import WsRuntime, ws_route
from hub.settings import Settings
from hub.store import InvalidValueError, UnknownApiKeyError

__all__ = ["NewApiKey", "RuntimeView", "create_app"]

_VERSION = "0.1.0"


@dataclass
class NewApiKey:
    """Body of POST /api/v1/api-keys."""

    name: str
    role: Role


class RuntimeView(
    ResourceSource, WsRuntime, MetricsSource, OperatorSource, AlertSource, SettlementSource,
    Protocol,
):
    """What the gateway reads from the running hub (the resources', WebSocket's, /metrics'
    and operator commands' needs included)."""

    @property
    def ready(self) -> bool:
        """Broker connected and store started."""

    def status(self) -> dict[str, Any]:
        """Counts and metrics."""

    def devices(self) -> list[dict[str, Any]]:
        """Known devices."""

    async def read_events(
        self, after_seq: int, limit: int, kinds: list[str] | None
    ) -> list[dict[str, Any]]:
        """Stored events with seq > after_seq (of `kinds`), oldest first."""

    @property
    def api_keys(self) -> ApiKeyAuthenticator:
        """Checks presented keys (cached) and makes and revokes keys."""

    @property
    def ws_tickets(self) -> WsTickets:
        """Single-use WebSocket tickets."""


def create_app(settings: Settings, runtime: RuntimeView) -> Litestar:
    """Build the gateway for one hub runtime (no module-level state)."""
    keys = runtime.api_keys
    tickets = runtime.ws_tickets
    viewer = [requires(Role.VIEWER, keys)]
    operator = [requires(Role.OPERATOR, keys)]

    @get("/health/live", sync_to_thread=False)
    def live() -> dict[str, str]:
        """The process is up and serving HTTP."""
        return {"status": "live"}

    @get("/health/ready", sync_to_thread=False)
    def ready() -> Response[dict[str, Any]]:
        """Ready when the MQTT broker is connected and the store is started."""
        is_ready = runtime.ready
        return Response(
            {"status": "ready" if is_ready else "not_ready", "site": settings.site},
            status_code=HTTP_200_OK if is_ready else HTTP_503_SERVICE_UNAVAILABLE,
        )

    @get("/api/v1/status", sync_to_thread=False, guards=viewer, security=SECURITY)
    def status() -> dict[str, Any]:
        """Devices, auctions, trades, prices, latency and deadline misses."""
        return runtime.status()

    @get("/api/v1/devices", sync_to_thread=False, guards=viewer, security=SECURITY)
    def devices() -> list[dict[str, Any]]:
        """Every known battery with its last reported state."""
        return runtime.devices()

    @get("/api/v1/events", guards=viewer, security=SECURITY)
    async def events(
        after_seq: Annotated[int, Parameter(ge=0, description="return events after this seq")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        kind: Annotated[list[str] | None, Parameter(description="only these kinds")] = None,
        from_ms: Annotated[
            int | None, Parameter(ge=0, description="only events at or after this ts_ms")
        ] = None,
        to_ms: Annotated[
            int | None, Parameter(ge=0, description="only events before this ts_ms")
        ] = None,
    ) -> list[dict[str, Any]]:
        """The event log after a seq, oldest first: page (or resume a client) with the seq of
        the last event received; `from_ms`/`to_ms` keep events of a time range."""
        if from_ms is None and to_ms is None:
            return await runtime.read_events(after_seq, limit, kind)
        return await events_in_range(runtime, after_seq, limit, kind, from_ms, to_ms)

    @get("/api/v1/whoami", sync_to_thread=False, guards=viewer, security=SECURITY)
    def whoami(request: Request[Any, Any, Any]) -> dict[str, object]:
        """The key this request was made with: its id, name and role."""
        return principal_of(request).as_dict()

    @post("/api/v1/ws-ticket", sync_to_thread=False, guards=viewer, security=SECURITY)
    def ws_ticket(request: Request[Any, Any, Any]) -> dict[str, object]:
        """A single-use ticket for the WebSocket (browsers cannot send headers on one), valid
        for `expires_in_s` seconds and bound to this request's key."""
        return {"ticket": tickets.issue(principal_of(request)), "expires_in_s": tickets.ttl_s}

    @get("/api/v1/api-keys", guards=operator, security=SECURITY)
    async def list_keys() -> list[dict[str, Any]]:
        """Every API key (revoked ones too), without secrets."""
        return [key_view(row) for row in await keys.list_keys()]

    @post("/api/v1/api-keys", guards=operator, security=SECURITY)
    async def create_key(
        request: Request[Any, Any, Any], data: JSONBody[NewApiKey]
    ) -> dict[str, Any]:
        """Make a key; the response holds its secret, shown this once."""
        try:
            issued = await keys.create(data.name, data.role, by=principal_of(request))
        except InvalidValueError as exc:
            raise ValidationException(detail=str(exc)) from None
        return {**key_view(issued.row), "key": issued.key}

    @delete("/api/v1/api-keys/{key_id:int}", status_code=HTTP_200_OK, guards=operator,
            security=SECURITY)
    async def revoke_key(request: Request[Any, Any, Any], key_id: FromPath[int]) -> dict[str, Any]:
        """Revoke a key: this hub refuses it from the next request on."""
        try:
            return key_view(await keys.revoke(key_id, by=principal_of(request)))
        except UnknownApiKeyError as exc:
            raise NotFoundException(detail=str(exc)) from None
        except InvalidValueError as exc:  # an id beyond any key's
            raise ValidationException(detail=str(exc)) from None

    # logging_config=None: Litestar would otherwise re-point the root logger at its own plain
    # formatter; the hub's handler (hub.runtime.configure_logging) keeps every line in format.
    return Litestar(
        route_handlers=[
            live, ready, status, devices, events, whoami, ws_ticket, list_keys, create_key,
            revoke_key,
            ws_route(runtime),
            metrics_handler(runtime, viewer),
            competition_handler(settings, runtime, viewer),
            history_handler(runtime, viewer),
            *resource_handlers(runtime, viewer),
            *operator_handlers(runtime, operator),
            *dispute_handlers(runtime, operator),
            *alert_handlers(runtime, viewer, operator),
            security_audit_handler(runtime, operator),
            *static_handlers(settings.dashboard_path()),
        ],
        openapi_config=openapi_config(_VERSION),
        debug=False,
        logging_config=None,
        request_max_body_size=settings.http_max_body_bytes,  # the server refuses first
        middleware=rate_limits(settings),
        cors_config=cors_config(settings),
    )
