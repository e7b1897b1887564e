"""HTTP gateway (Litestar): health probes and a status endpoint; the full API comes later."""

from hub.gateway.app import create_app

__all__ = ["create_app"]
