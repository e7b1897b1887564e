"""API keys and WebSocket tickets of the HTTP gateway: roles, key format, verification cache."""

from hub.auth.authenticator import ApiKeyAuthenticator
from hub.auth.keys import (
    IssuedKey,
    Principal,
    Role,
    hash_secret,
    issue_api_key,
    key_view,
    parse_key,
)
from hub.auth.tickets import WsTickets

__all__ = [
    "ApiKeyAuthenticator",
    "IssuedKey",
    "Principal",
    "Role",
    "WsTickets",
    "hash_secret",
    "issue_api_key",
    "key_view",
    "parse_key",
]
