"""The gateway's authentication: API keys from headers, one Litestar guard per role, and the
security schemes declared in the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityRequirement, SecurityScheme
from litestar.types import Guard

from hub.auth import ApiKeyAuthenticator, Principal, Role

__all__ = [
    "API_KEY_HEADER",
    "SECURITY",
    "client_address",
    "openapi_config",
    "presented_key",
    "principal_of",
    "requires",
]

API_KEY_HEADER = "X-API-Key"
_STATE_KEY = "etp_principal"
# Either header works; the schema offers both.
SECURITY: list[SecurityRequirement] = [{"bearerAuth": []}, {"apiKeyHeader": []}]


def presented_key(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The key in `Authorization: Bearer <key>`, else in `X-API-Key: <key>`, else None."""
    authorization = connection.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    header = connection.headers.get(API_KEY_HEADER.lower())
    return header.strip() if header and header.strip() else None


def client_address(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The peer's address as the server saw it (what the audit's failed logins name)."""
    client = connection.client
    return client.host if client is not None else None


def requires(role: Role, authenticator: ApiKeyAuthenticator) -> Guard:
    """A guard: 401 without a valid key, 403 for a key whose role does not include `role`."""

    async def guard(
        connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler
    ) -> None:
        principal = await authenticator.authenticate(
            presented_key(connection), client_address(connection)
        )
        if principal is None:
            raise NotAuthorizedException(
                detail="a valid API key is required: send 'Authorization: Bearer <key>' or "
                f"'{API_KEY_HEADER}: <key>' (make one with `etp apikey create`)",
                headers={"WWW-Authenticate": 'Bearer realm="etp"'},
            )
        if not principal.role.includes(role):
            raise PermissionDeniedException(
                detail=f"this needs an {role.value} key; key {principal.key_id} "
                f"({principal.name}) is a {principal.role.value} key"
            )
        connection.scope[_STATE_KEY] = principal  # type: ignore[literal-required]

    return guard


def principal_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    """The principal a guard accepted for this request."""
    return connection.scope[_STATE_KEY]  # type: ignore[literal-required,no-any-return]


def openapi_config(version: str) -> OpenAPIConfig:
    """The schema at /schema (and /schema/openapi.json), with the API key schemes declared."""
    return OpenAPIConfig(
        title="ETP hub",
        version=version,
        description="Send an API key (`etp apikey create`) as `Authorization: Bearer <key>` "
        f"or `{API_KEY_HEADER}: <key>`; /health/* needs none.",
        components=Components(
            security_schemes={
                "bearerAuth": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    bearer_format="etp_<id>_<secret>",
                    description="An ETP API key as a bearer token",
                ),
                "apiKeyHeader": SecurityScheme(
                    type="apiKey",
                    name=API_KEY_HEADER,
                    security_scheme_in="header",
                    description="An ETP API key in its own header",
                ),
            }
        ),
    )
