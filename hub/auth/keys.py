"""API key format, roles and hashing; `issue_api_key` makes a key and stores only its hash.

A key reads `etp_<id>_<secret>`: `etp_<id>` is public (it names the key in logs, `etp apikey
list` and revocations), `<secret>` is 32 random bytes (secrets.token_urlsafe) shown once when
the key is made. The store keeps the SHA-256 of the secret: a high-entropy secret needs no slow
password hash, and a stolen database holds no usable key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from hub.store.models import ApiKeyRow

__all__ = [
    "KEY_PREFIX",
    "IssuedKey",
    "KeyStore",
    "Principal",
    "Role",
    "format_key",
    "hash_secret",
    "issue_api_key",
    "key_view",
    "parse_key",
    "secret_matches",
]

KEY_PREFIX = "etp_"
SECRET_BYTES = 32


class Role(StrEnum):
    """What a key may do: a viewer reads the site's state; an operator also changes it."""

    VIEWER = "viewer"
    OPERATOR = "operator"

    def includes(self, required: Role) -> bool:
        """True when this role may do what `required` may (operator includes viewer)."""
        return _RANK[self] >= _RANK[required]


_RANK = {Role.VIEWER: 0, Role.OPERATOR: 1}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made a request: the key's id, name and role (never its secret)."""

    key_id: int
    name: str
    role: Role

    def as_dict(self) -> dict[str, object]:
        """JSON-ready (for /api/v1/whoami)."""
        return {"id": self.key_id, "name": self.name, "role": self.role.value}


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key just made: `key` is the only copy of its secret (show it once, then drop it)."""

    row: ApiKeyRow
    key: str


class KeyStore(Protocol):
    """The part of hub.store.Store that keeps API keys."""

    async def create_api_key(
        self, name: str, role: str, key_hash: str, *, created_ms: int | None = None
    ) -> ApiKeyRow: ...

    async def get_api_key(self, key_id: int) -> ApiKeyRow | None: ...

    async def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRow]: ...

    async def revoke_api_key(self, key_id: int, *, revoked_ms: int | None = None) -> ApiKeyRow: ...

    async def note_api_key_used(self, key_id: int, used_ms: int) -> None: ...


def key_view(row: ApiKeyRow) -> dict[str, Any]:
    """An API key as the API and `etp apikey --json` show it: never its secret, nor its hash."""
    return {
        "id": row.id,
        "name": row.name,
        "role": row.role,
        "created_ms": row.created_ms,
        "revoked_ms": row.revoked_ms,
        "last_used_ms": row.last_used_ms,
    }


def hash_secret(secret: str) -> str:
    """Hex SHA-256 of a key's secret part: what the store keeps."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, key_hash: str) -> bool:
    """Constant-time comparison of a presented secret with a stored hash."""
    return hmac.compare_digest(hash_secret(secret), key_hash)


def format_key(key_id: int, secret: str) -> str:
    """The key as handed to a user."""
    return f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(presented: str) -> tuple[int, str] | None:
    """(id, secret) of a presented key, or None if it is not shaped like one of ours."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        return None
    id_text, sep, secret = presented[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or not id_text.isascii() or not id_text.isdigit():
        return None
    if len(id_text) > 18:
        return None
    return int(id_text), secret


async def issue_api_key(store: KeyStore, name: str, role: Role | str) -> IssuedKey:
    """Make a key with a fresh random secret; the store gets its hash, the caller the key."""
    role = Role(role)
    secret = secrets.token_urlsafe(SECRET_BYTES)
    row = await store.create_api_key(name, role.value, hash_secret(secret))
    return IssuedKey(row=row, key=format_key(row.id, secret))
