"""ApiKeyAuthenticator: checks presented API keys against the store through a small cache.

Every refusal names its reason (no_key, malformed_key, unknown_key, wrong_secret,
revoked_key) to the `on_refused` callbacks with the client's address: the security audit's
failed logins. Keys made and revoked here go to the `on_change` callbacks (the audit's
api_key_created / api_key_revoked).

Revocation: a key revoked through the running hub (`revoke`, the operator API) is refused
from the next request; a key revoked by another process (`etp apikey revoke`) is refused once
its cache entry is older than `cache_ttl_s` (5 s by default), when the hub reads it again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.auth.keys import (
    IssuedKey,
    KeyStore,
    Principal,
    Role,
    issue_api_key,
    parse_key,
    secret_matches,
)
from hub.store.models import ApiKeyRow
from hub.store.validate import now_ms

__all__ = ["ApiKeyAuthenticator"]

log = logging.getLogger("hub.auth")


@dataclass(frozen=True, slots=True)
class _Cached:
    row: ApiKeyRow | None  # None: no key has this id (cached too, so guessing costs no reads)
    loaded_at: float


class ApiKeyAuthenticator:
    """Answers "whose key is this?" for the gateway: at most one database read per key id
    every `cache_ttl_s`, and `last_used_ms` written at most every `note_use_every_s`."""

    def __init__(
        self,
        store: KeyStore,
        *,
        cache_ttl_s: float = 5.0,
        note_use_every_s: float = 60.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.cache_ttl_s = cache_ttl_s
        self._note_use_every_s = note_use_every_s
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[int, _Cached] = {}
        self._noted: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_revoke: list[Callable[[int], None]] = []  # e.g. WsTickets.forget_key
        # (client address or None, reason, key id or None): a key or ticket refused
        self.on_refused: list[Callable[[str | None, str, int | None], None]] = []
        # ("created" | "revoked", the key's row, who did it or None): keys managed here
        self.on_change: list[Callable[[str, ApiKeyRow, Principal | None], None]] = []
        self.stats = {"accepted": 0, "refused": 0, "reads": 0}

    async def authenticate(
        self, presented: str | None, client: str | None = None
    ) -> Principal | None:
        """The key's principal, or None if it is missing, malformed, unknown, wrong or revoked
        (then `on_refused` hears why, with the `client` address)."""
        parsed = parse_key(presented) if presented else None
        if parsed is None:
            self.refused(client, "malformed_key" if presented else "no_key", None)
            return None
        key_id, secret = parsed
        row = await self._row(key_id)
        if row is None:
            self.refused(client, "unknown_key", key_id)
            return None
        if row.revoked:
            self.refused(client, "revoked_key", key_id)
            return None
        if not secret_matches(secret, row.key_hash):
            self.refused(client, "wrong_secret", key_id)
            return None
        self.stats["accepted"] += 1
        self._note_use(key_id)
        return Principal(key_id=row.id, name=row.name, role=Role(row.role))

    def refused(self, client: str | None, reason: str, key_id: int | None) -> None:
        """Count a refused key or ticket and tell `on_refused` (never the secret)."""
        self.stats["refused"] += 1
        for callback in self.on_refused:
            callback(client, reason, key_id)

    async def create(
        self, name: str, role: Role | str, *, by: Principal | None = None
    ) -> IssuedKey:
        """Make a key (see hub.auth.keys.issue_api_key); `by`: who asked (for the audit)."""
        issued = await issue_api_key(self._store, name, role)
        self._cache.pop(issued.row.id, None)
        self._changed("created", issued.row, by)
        return issued

    async def list_keys(self) -> list[ApiKeyRow]:
        """Every key, revoked ones too (rows hold hashes, never secrets)."""
        return await self._store.list_api_keys()

    async def revoke(self, key_id: int, *, by: Principal | None = None) -> ApiKeyRow:
        """Revoke a key: refused from the next request on (UnknownApiKeyError if no such id)."""
        row = await self._store.revoke_api_key(key_id)
        self._cache[key_id] = _Cached(row, self._clock())
        for callback in self.on_revoke:
            callback(key_id)
        self._changed("revoked", row, by)
        return row

    def _changed(self, change: str, row: ApiKeyRow, by: Principal | None) -> None:
        for callback in self.on_change:
            try:
                callback(change, row, by)
            except Exception as exc:  # the key is made or revoked: an audit bug must not undo
                log.error("API key change not audited: %s", exc)

    async def close(self) -> None:
        """Wait for last-used writes in flight (call before the store closes)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _row(self, key_id: int) -> ApiKeyRow | None:
        now = self._clock()
        cached = self._cache.get(key_id)
        if cached is not None and now - cached.loaded_at < self.cache_ttl_s:
            return cached.row
        row = await self._store.get_api_key(key_id)
        self.stats["reads"] += 1
        if len(self._cache) >= self._max_cached:
            self._cache.clear()  # cheap bound against ids being guessed at random
        self._cache[key_id] = _Cached(row, now)
        return row

    def _note_use(self, key_id: int) -> None:
        now = self._clock()
        last = self._noted.get(key_id)
        if last is not None and now - last < self._note_use_every_s:
            return
        self._noted[key_id] = now
        task = asyncio.create_task(self._write_use(key_id, now_ms()), name="api-key-used")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_use(self, key_id: int, used_ms: int) -> None:
        try:
            await self._store.note_api_key_used(key_id, used_ms)
        except Exception as exc:  # a lost last_used_ms must not fail a request
            log.warning("could not note the use of API key %s: %s", key_id, exc)
