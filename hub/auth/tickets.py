"""Short-lived single-use WebSocket tickets: a browser cannot set headers on a WebSocket, so it
trades its API key for a ticket over HTTP and presents the ticket when it connects."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from hub.auth.keys import Principal

__all__ = ["WsTickets"]


class WsTickets:
    """Tickets held in memory (a restart forgets them: clients ask again). Each is random
    (32 bytes), valid `ttl_s` seconds, redeemable once, and bound to the key it was issued to:
    revoking that key through the hub drops its tickets too."""

    def __init__(
        self,
        ttl_s: float = 30.0,
        *,
        max_open: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self._max_open = max_open
        self._clock = clock
        self._open: dict[str, tuple[Principal, float]] = {}

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, principal: Principal) -> str:
        """A new ticket for `principal`."""
        now = self._clock()
        if len(self._open) >= self._max_open:
            self._drop_expired(now)
            while len(self._open) >= self._max_open:  # still full: the oldest go first
                del self._open[next(iter(self._open))]
        ticket = secrets.token_urlsafe(32)
        self._open[ticket] = (principal, now + self.ttl_s)
        return ticket

    def redeem(self, ticket: str) -> Principal | None:
        """The principal the ticket was issued to, once; None if unknown, used or expired."""
        entry = self._open.pop(ticket, None)
        if entry is None:
            return None
        principal, expires_at = entry
        return principal if self._clock() < expires_at else None

    def forget_key(self, key_id: int) -> None:
        """Drop every open ticket of a key (it was revoked)."""
        for ticket in [t for t, (p, _) in self._open.items() if p.key_id == key_id]:
            del self._open[ticket]

    def _drop_expired(self, now: float) -> None:
        for ticket in [t for t, (_, expires) in self._open.items() if expires <= now]:
            del self._open[ticket]
