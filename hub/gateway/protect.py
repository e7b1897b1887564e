"""Abuse limits of the HTTP API: request rates per client address and per API key, and the
CORS allow-list. (The server's own bounds, headers, bodies, slow and idle clients, open
connections, are in server.py.)

Rates use Litestar's rate-limit middleware, twice: once keyed by the client's address, once by
the API key presented. The address is the socket's peer: uvicorn reads X-Forwarded-For only
from the proxies listed in ETP_HTTP_TRUSTED_PROXIES (none by default), so a client cannot pick
its own bucket by sending the header. The key bucket is named by a hash of the whole key
presented (it is counted before the key is verified): only a caller who holds a key can spend
its budget, and made-up keys are held by their address's budget.
"""

from __future__ import annotations

import hashlib
from typing import Any

from litestar import Request
from litestar.config.cors import CORSConfig
from litestar.middleware.rate_limit import RateLimitConfig

from hub.settings import Settings

__all__ = ["cors_config", "key_identifier", "rate_limits"]

_OPEN = [r"^/health/"]  # probes of a service manager are never limited


def key_identifier(request: Request[Any, Any, Any]) -> str:
    """The rate-limit bucket of the API key a request presents, else of its client address."""
    header = request.headers.get("authorization", "")
    key = header[7:].strip() if header[:7].lower() == "bearer " else ""
    key = key or request.headers.get("x-api-key", "").strip()
    if key:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return "address:" + _address(request)


def _address(request: Request[Any, Any, Any]) -> str:
    return request.client.host if request.client else "-"


def rate_limits(settings: Settings) -> list[Any]:
    """The rate-limit middlewares (per client address, then per key; a limit of 0 is none)."""
    limits = (
        (settings.http_rate_limit_per_address, _address, "rate_limit_address"),
        (settings.http_rate_limit_per_key, key_identifier, "rate_limit_key"),
    )
    return [
        RateLimitConfig(
            rate_limit=("minute", per_minute),
            identifier_for_request=identify,
            exclude=_OPEN,
            store=store,
        ).middleware
        for per_minute, identify, store in limits
        if per_minute
    ]


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS for the origins ETP_HTTP_CORS_ORIGINS lists (none: no cross-origin access)."""
    if not settings.http_cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.http_cors_origins),
        allow_methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "X-API-Key", "Content-Type"],
    )
