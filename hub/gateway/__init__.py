"""HTTP gateway (Litestar): open health probes, the /api/v1 routes behind API keys, /schema."""

from hub.gateway.app import create_app

__all__ = ["create_app"]
