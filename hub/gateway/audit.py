"""GET /api/v1/audit/security (operator keys): the site's security events, as `etp audit
security` lists them (hub.security.audit)."""

from __future__ import annotations

from typing import Annotated, Any, Protocol

from litestar import get
from litestar.exceptions import ServiceUnavailableException
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.types import Guard

from hub.gateway.auth import SECURITY
from hub.security.audit import list_security_events
from hub.store import Store

__all__ = ["AuditSource", "security_audit_handler"]


class AuditSource(Protocol):
    """What the audit route reads."""

    @property
    def store(self) -> Store | None:
        """The hub's store (None only before it started)."""


def security_audit_handler(source: AuditSource, operator: list[Guard]) -> HTTPRouteHandler:
    """The route; `operator`: the guards of operator keys."""

    @get("/api/v1/audit/security", guards=operator, security=SECURITY)
    async def security_audit(
        from_ms: Annotated[
            int | None, Parameter(ge=0, description="only events at or after this ts_ms")
        ] = None,
        device: Annotated[int | None, Parameter(ge=0, description="only this device")] = None,
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        """The most recent security events (rejected frames, failed logins, API keys made
        and revoked, devices provisioned, revoked, rotated or quarantined, operator actions,
        alerts), oldest first; never a secret."""
        store = source.store
        if store is None or not store.started:
            raise ServiceUnavailableException(detail="the hub's store is not running")
        rows = await list_security_events(store, since_ms=from_ms, device_id=device, limit=limit)
        return [row.as_dict() for row in rows]

    return security_audit
