"""Store API for the gateway's API keys: add (hash only), read, list, revoke, note use."""

from __future__ import annotations

import sqlalchemy as sa

from hub.store.errors import InvalidValueError, UnknownApiKeyError
from hub.store.models import API_KEY_ROLES, API_KEYS, ApiKeyRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_text, now_ms, to_row

__all__ = ["ApiKeyStore"]

_HEX = frozenset("0123456789abcdef")


class ApiKeyStore(StoreParts):
    """API keys: the store keeps a key's name, role and the SHA-256 of its secret; making the
    secret and checking a presented key is hub.auth's job (the store never sees a secret)."""

    async def create_api_key(
        self, name: str, role: str, key_hash: str, *, created_ms: int | None = None
    ) -> ApiKeyRow:
        """Add a key; returns it with its id (the id is part of the key handed to the user)."""
        check_text("name", name, 64)
        if role not in API_KEY_ROLES:
            raise InvalidValueError(f"role must be one of {', '.join(API_KEY_ROLES)}, not {role!r}")
        if not isinstance(key_hash, str) or len(key_hash) != 64 or not set(key_hash) <= _HEX:
            raise InvalidValueError("key_hash must be a SHA-256 as 64 lower-case hex digits")
        check_ints(created_ms=created_ms)
        values = {
            "name": name,
            "role": role,
            "key_hash": key_hash,
            "created_ms": now_ms() if created_ms is None else created_ms,
        }
        async with self._db.transaction() as connection:
            result = await connection.execute(
                API_KEYS.insert().values(values).returning(*API_KEYS.c)
            )
            return to_row(ApiKeyRow, result.one())  # type: ignore[no-any-return]

    async def get_api_key(self, key_id: int) -> ApiKeyRow | None:
        """The key with this id (revoked or not), or None."""
        check_ints(key_id=key_id)
        rows = await self._db.fetch(sa.select(API_KEYS).where(API_KEYS.c.id == key_id))
        return to_row(ApiKeyRow, rows[0]) if rows else None

    async def list_api_keys(self, *, include_revoked: bool = True) -> list[ApiKeyRow]:
        """Every key by id (only valid ones with include_revoked=False)."""
        query = sa.select(API_KEYS).order_by(API_KEYS.c.id)
        if not include_revoked:
            query = query.where(API_KEYS.c.revoked_ms.is_(None))
        return [to_row(ApiKeyRow, row) for row in await self._db.fetch(query)]

    async def revoke_api_key(self, key_id: int, *, revoked_ms: int | None = None) -> ApiKeyRow:
        """Revoke a key (it is refused from then on); revoking it again keeps the first time.
        Raises UnknownApiKeyError for an id no key has."""
        check_ints(key_id=key_id, revoked_ms=revoked_ms)
        when = now_ms() if revoked_ms is None else revoked_ms
        async with self._db.transaction() as connection:
            await connection.execute(
                API_KEYS.update()
                .where(API_KEYS.c.id == key_id, API_KEYS.c.revoked_ms.is_(None))
                .values(revoked_ms=when)
            )
            rows = (
                await connection.execute(sa.select(API_KEYS).where(API_KEYS.c.id == key_id))
            ).fetchall()
        if not rows:
            raise UnknownApiKeyError(f"no API key has id {key_id} (see `etp apikey list`)")
        return to_row(ApiKeyRow, rows[0])  # type: ignore[no-any-return]

    async def note_api_key_used(self, key_id: int, used_ms: int) -> None:
        """Set last_used_ms (callers write it now and then, not on every request)."""
        check_ints(key_id=key_id, used_ms=used_ms)
        async with self._db.transaction() as connection:
            await connection.execute(
                API_KEYS.update().where(API_KEYS.c.id == key_id).values(last_used_ms=used_ms)
            )
