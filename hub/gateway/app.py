"""Litestar app factory: /health/live, /health/ready, /api/v1/status, devices and events."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from litestar import Litestar, Response, get
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK, HTTP_503_SERVICE_UNAVAILABLE

from hub.settings import Settings

__all__ = ["RuntimeView", "create_app"]


class RuntimeView(Protocol):
    """What the gateway reads from the running hub."""

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


def create_app(settings: Settings, runtime: RuntimeView) -> Litestar:
    """Build the gateway for one hub runtime (no module-level state)."""

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

    @get("/api/v1/status", sync_to_thread=False)
    def status() -> dict[str, Any]:
        """Devices, auctions, trades, prices, latency and deadline misses."""
        return runtime.status()

    @get("/api/v1/devices", sync_to_thread=False)
    def devices() -> list[dict[str, Any]]:
        """Every known battery with its last reported state."""
        return runtime.devices()

    @get("/api/v1/events")
    async def events(
        after_seq: Annotated[int, Parameter(ge=0, description="return events after this seq")] = 0,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        kind: Annotated[list[str] | None, Parameter(description="only these kinds")] = None,
    ) -> list[dict[str, Any]]:
        """The event log after a seq, oldest first: page (or resume a client) with the seq of
        the last event received."""
        return await runtime.read_events(after_seq, limit, kind)

    # logging_config=None: Litestar would otherwise re-point the root logger at its own plain
    # formatter; the hub's handler (hub.runtime.configure_logging) keeps every line in format.
    return Litestar(
        route_handlers=[live, ready, status, devices, events], debug=False, logging_config=None
    )
