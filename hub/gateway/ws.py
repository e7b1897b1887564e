"""The gateway's WebSocket `/ws`: one socket per page carrying a snapshot, then the site's
events live; resume after a reconnect from the store's event log; bounded per client.

Fan-out uses the hub's own event bus (one bounded `Subscription` per client), not Litestar
Channels: a subscription tells its reader when it overflowed (`Lagged`) and can skip what a
store read already returned (`skip_through`), which is what resume without gap or duplicate
needs; Channels' per-subscriber queue drops silently. See hub/gateway/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.handlers import WebsocketRouteHandler

from hub.auth import ApiKeyAuthenticator, Principal, Role, WsTickets
from hub.events import Event, EventLog, Lagged, Subscription, SubscriptionClosedError
from hub.gateway.auth import client_address, presented_key
from hub.settings import Settings

__all__ = ["CloseCode", "WsClients", "WsLimits", "WsRuntime", "ws_route"]

log = logging.getLogger("hub.gateway.ws")

_RESUME_PAGE = 500


class CloseCode(IntEnum):
    """Close codes the hub sends (4000-4999 are the application's own)."""

    NORMAL = 1000
    GOING_AWAY = 1001  # the hub is stopping
    BAD_MESSAGE = 4400  # the first message was not JSON / not an auth message
    UNAUTHENTICATED = 4401  # no, or a wrong, revoked or expired, key or ticket
    FORBIDDEN = 4403  # the key's role may not read
    RESYNC = 4409  # the client fell too far behind: reconnect without after_seq
    TOO_MANY = 4429  # per-key or total WebSocket limit reached


@dataclass(frozen=True, slots=True)
class WsLimits:
    """The WebSocket's bounds (ETP_WS_* settings)."""

    max_clients: int = 500
    max_clients_per_key: int = 20
    auth_timeout_s: float = 5.0
    client_backlog: int = 1000
    send_timeout_s: float = 10.0
    max_resume_events: int = 10_000

    @classmethod
    def from_settings(cls, settings: Settings) -> WsLimits:
        """The limits a hub's settings ask for."""
        return cls(
            max_clients=settings.ws_max_clients,
            max_clients_per_key=settings.ws_max_clients_per_key,
            auth_timeout_s=settings.ws_auth_timeout_s,
            client_backlog=settings.ws_client_backlog,
            send_timeout_s=settings.ws_send_timeout_s,
            max_resume_events=settings.ws_max_resume_events,
        )


class WsClients:
    """Who is connected (per key and in total), the refusals and resyncs, and each event's
    JSON text encoded once for every client."""

    def __init__(self, limits: WsLimits, *, encoded_cache: int = 4096) -> None:
        self.limits = limits
        self._per_key: dict[int, int] = {}
        self._open: dict[int, set[Subscription]] = {}  # by key id, to end them on revocation
        self._revoked: set[Subscription] = set()
        self._encoded: OrderedDict[int, str] = OrderedDict()
        self._encoded_cache = encoded_cache
        self.stats = {
            "accepted": 0,
            "refused_auth": 0,
            "refused_limit": 0,
            "resumed": 0,
            "resync_behind": 0,
            "resync_slow": 0,
            "events_sent": 0,
        }

    @property
    def clients(self) -> int:
        """Authenticated clients connected now."""
        return sum(self._per_key.values())

    def admit(self, principal: Principal) -> str | None:
        """Count the client in; else the reason it is refused (a limit is reached)."""
        if self.clients >= self.limits.max_clients:
            self.stats["refused_limit"] += 1
            return f"{self.limits.max_clients} WebSocket clients connected (ETP_WS_MAX_CLIENTS)"
        if self._per_key.get(principal.key_id, 0) >= self.limits.max_clients_per_key:
            self.stats["refused_limit"] += 1
            return (
                f"key {principal.key_id} has {self.limits.max_clients_per_key} WebSocket "
                "clients connected (ETP_WS_MAX_CLIENTS_PER_KEY)"
            )
        self._per_key[principal.key_id] = self._per_key.get(principal.key_id, 0) + 1
        self.stats["accepted"] += 1
        return None

    def release(self, principal: Principal) -> None:
        """Count a client out."""
        left = self._per_key.get(principal.key_id, 0) - 1
        if left > 0:
            self._per_key[principal.key_id] = left
        else:
            self._per_key.pop(principal.key_id, None)

    def watch(self, principal: Principal, subscription: Subscription) -> None:
        """Remember a client's subscription under its key (see `forget_key`)."""
        self._open.setdefault(principal.key_id, set()).add(subscription)

    def unwatch(self, principal: Principal, subscription: Subscription) -> bool:
        """Forget a client's subscription; True if its key was revoked meanwhile."""
        self._open.get(principal.key_id, set()).discard(subscription)
        if not self._open.get(principal.key_id, True):
            del self._open[principal.key_id]
        revoked = subscription in self._revoked
        self._revoked.discard(subscription)
        return revoked

    def forget_key(self, key_id: int) -> None:
        """A key was revoked through this hub: end its clients' streams (closed with 4401)."""
        for subscription in self._open.get(key_id, set()):
            self._revoked.add(subscription)
            subscription.close()

    def encode(self, event: Event) -> str:
        """The event message's JSON text (cached by seq: fan-out encodes each event once)."""
        text = self._encoded.get(event.seq)
        if text is None:
            text = json.dumps({"type": "event", **event.as_dict()}, separators=(",", ":"))
            self._encoded[event.seq] = text
            if len(self._encoded) > self._encoded_cache:
                self._encoded.popitem(last=False)
        return text

    def summary(self) -> dict[str, Any]:
        """For /api/v1/status under "ws"."""
        return {
            "clients": self.clients,
            "keys": len(self._per_key),
            "max_clients": self.limits.max_clients,
            "max_clients_per_key": self.limits.max_clients_per_key,
            **self.stats,
        }


class WsRuntime(Protocol):
    """What the WebSocket reads from the running hub."""

    @property
    def events(self) -> EventLog | None:
        """The site's event log (None before the hub started)."""

    @property
    def ws_clients(self) -> WsClients:
        """Connected clients and their limits."""

    @property
    def ws_tickets(self) -> WsTickets:
        """Single-use WebSocket tickets."""

    @property
    def api_keys(self) -> ApiKeyAuthenticator:
        """Checks presented keys."""

    def status(self) -> dict[str, Any]:
        """Counts and metrics (the snapshot's `status`)."""

    def devices(self) -> list[dict[str, Any]]:
        """Known devices (the snapshot's `devices`)."""


class _Refused(Exception):
    """Close the socket with `code` and `reason` (raised before any event was sent)."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _after_seq(value: object) -> int | None:
    """A client's `after_seq` (query parameter or auth message field), or None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise _Refused(CloseCode.BAD_MESSAGE, "after_seq must be a whole number >= 0")
    try:
        seq = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        raise _Refused(CloseCode.BAD_MESSAGE, "after_seq must be a whole number >= 0") from None
    if seq < 0:
        raise _Refused(CloseCode.BAD_MESSAGE, "after_seq must be a whole number >= 0")
    return seq


class _Session:
    """One connected client: authenticate, admit, snapshot or replay, then stream."""

    def __init__(self, socket: WebSocket[Any, Any, Any], runtime: WsRuntime) -> None:
        self.socket = socket
        self.runtime = runtime
        self.clients = runtime.ws_clients
        self.limits = runtime.ws_clients.limits
        self.principal = Principal(key_id=0, name="", role=Role.VIEWER)  # until authenticated

    async def authenticate(self) -> tuple[Principal, int | None]:
        """The client's principal and resume point: ticket, headers, or first message."""
        query = self.socket.query_params
        after_seq = _after_seq(query.get("after_seq"))
        ticket = query.get("ticket")
        if ticket:
            principal = self.runtime.ws_tickets.redeem(ticket)
            if principal is None:
                self.runtime.api_keys.refused(client_address(self.socket), "bad_ticket", None)
                raise _Refused(CloseCode.UNAUTHENTICATED, "unknown, used or expired ticket")
            return principal, after_seq
        key = presented_key(self.socket)
        if key is None:
            try:
                text = await asyncio.wait_for(
                    self.socket.receive_text(), self.limits.auth_timeout_s
                )
            except TimeoutError:
                self.runtime.api_keys.refused(client_address(self.socket), "no_key", None)
                raise _Refused(
                    CloseCode.UNAUTHENTICATED,
                    f'no ticket, no key header and no {{"type": "auth", "key": ...}} within '
                    f"{self.limits.auth_timeout_s:g} s",
                ) from None
            try:
                message = json.loads(text)
            except (TypeError, ValueError):  # not JSON, or a binary frame (no text)
                message = None
            if not isinstance(message, dict) or message.get("type") != "auth":
                self.runtime.api_keys.refused(client_address(self.socket), "bad_auth_message", None)
                raise _Refused(CloseCode.BAD_MESSAGE,
                               'the first message must be {"type": "auth", "key": ...}')
            key = message.get("key") if isinstance(message.get("key"), str) else None
            if message.get("after_seq") is not None:
                after_seq = _after_seq(message.get("after_seq"))
        principal = await self.runtime.api_keys.authenticate(key, client_address(self.socket))
        if principal is None:
            raise _Refused(CloseCode.UNAUTHENTICATED,
                           "a valid API key is required (etp apikey create)")
        return principal, after_seq

    async def send(self, text: str) -> None:
        """Send one message; a client that takes none for send_timeout_s is dropped."""
        await asyncio.wait_for(self.socket.send_text(text), self.limits.send_timeout_s)

    async def send_snapshot(self, log: EventLog, subscription: Subscription) -> None:
        """A snapshot consistent with the subscription: events after its seq follow."""
        seq = log.last_seq
        subscription.skip_through(seq)  # those are in the snapshot already
        await self.send(json.dumps({
            "type": "snapshot",
            "seq": seq,
            "status": self.runtime.status(),
            "devices": self.runtime.devices(),
        }, separators=(",", ":")))

    async def replay(self, log: EventLog, subscription: Subscription, after_seq: int) -> bool:
        """Send every stored event after `after_seq`, page by page (live ones emitted
        meanwhile wait in the subscription, which skips those replayed). False, having sent
        nothing: too many (or a seq this hub never issued), resync instead."""
        if after_seq > log.last_seq:  # a seq this hub never handed out (another database?)
            return False
        limit = self.limits.max_resume_events
        if log.last_seq - after_seq > limit and await self._count_after(log, after_seq) > limit:
            return False  # (seqs have gaps: the difference alone overstates the count)
        await self.send(json.dumps({"type": "resume", "after_seq": after_seq}))
        cursor = after_seq
        while True:
            page = await log.read(cursor, limit=_RESUME_PAGE)
            if page:
                subscription.skip_through(page[-1].seq)
            for event in page:
                await self.send(self.clients.encode(event))
            self.clients.stats["events_sent"] += len(page)
            if len(page) < _RESUME_PAGE:
                return True
            cursor = page[-1].seq

    async def _count_after(self, log: EventLog, after_seq: int) -> int:
        """Stored events after `after_seq`, counted up to just past the resume limit."""
        count, cursor = 0, after_seq
        while count <= self.limits.max_resume_events:
            page = await log.read(cursor, limit=_RESUME_PAGE)
            count += len(page)
            if len(page) < _RESUME_PAGE:
                break
            cursor = page[-1].seq
        return count

    async def stream(self, subscription: Subscription) -> CloseCode:
        """Live events until the client leaves, the hub stops, or the client falls behind."""
        while True:
            if subscription.pending >= subscription.maxsize:  # full: the client lags
                return CloseCode.RESYNC
            try:
                item = await subscription.get()
            except SubscriptionClosedError:
                return CloseCode.GOING_AWAY
            if isinstance(item, Lagged):
                return CloseCode.RESYNC
            await self.send(self.clients.encode(item))
            self.clients.stats["events_sent"] += 1

    async def drain_incoming(self, subscription: Subscription) -> None:
        """Read (and ignore) what the client sends; its leaving ends the subscription."""
        try:
            while True:
                await self.socket.receive_data("text")
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            subscription.close()


async def _close(socket: WebSocket[Any, Any, Any], code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(socket.close(code=code, reason=reason[:120]), 2.0)


def ws_route(runtime: WsRuntime, path: str = "/ws") -> WebsocketRouteHandler:
    """The `/ws` route handler of one hub runtime."""

    @websocket(path)
    async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
        """Snapshot then live events; `?ticket=` or a key (header or first message);
        `?after_seq=N` resumes from the store's event log."""
        await socket.accept()
        session = _Session(socket, runtime)
        clients = runtime.ws_clients
        try:
            principal, after_seq = await session.authenticate()
            if not principal.role.includes(Role.VIEWER):
                raise _Refused(CloseCode.FORBIDDEN, "this key may not read events")
        except _Refused as refused:
            clients.stats["refused_auth"] += 1
            log.info("WebSocket from %s refused (%d): %s", socket.client, refused.code,
                     refused.reason)
            await _close(socket, refused.code, refused.reason)
            return
        except WebSocketDisconnect:
            return
        session.principal = principal
        refusal = clients.admit(principal)
        if refusal is not None:
            log.info("WebSocket of key %d refused: %s", principal.key_id, refusal)
            await _close(socket, CloseCode.TOO_MANY, refusal)
            return
        try:
            close_with = await _serve(session, after_seq)
        finally:
            clients.release(principal)  # before the close handshake, which may take a while
        if close_with is not None:
            await _close(socket, *close_with)

    return ws_endpoint


async def _serve(session: _Session, after_seq: int | None) -> tuple[CloseCode, str] | None:
    """Everything after admission (the client's subscription lives exactly this long); the
    close code and reason to send, or None when the client left."""
    runtime, clients = session.runtime, session.clients
    log_ = runtime.events
    if log_ is None or not log_.started:
        return CloseCode.GOING_AWAY, "the hub is not running"
    subscription = log_.subscribe(maxsize=session.limits.client_backlog)  # before any read
    clients.watch(session.principal, subscription)
    reader = asyncio.create_task(session.drain_incoming(subscription), name="ws-reader")
    code, reason = CloseCode.NORMAL, ""
    try:
        resumed = False
        if after_seq is not None:
            resumed = await session.replay(log_, subscription, after_seq)
            if resumed:
                clients.stats["resumed"] += 1
            else:
                clients.stats["resync_behind"] += 1
                await session.send(json.dumps({
                    "type": "resync",
                    "reason": f"more than {session.limits.max_resume_events} events after "
                    f"seq {after_seq}, or a seq this hub does not know: a snapshot follows",
                }))
        if not resumed:
            await session.send_snapshot(log_, subscription)
        code = await session.stream(subscription)
        if code is CloseCode.RESYNC:
            clients.stats["resync_slow"] += 1
            reason = "too far behind: reconnect without after_seq for a fresh snapshot"
            await session.send(json.dumps({"type": "resync", "reason": reason}))
        elif code is CloseCode.GOING_AWAY:
            reason = "the hub is stopping"
    except TimeoutError:
        clients.stats["resync_slow"] += 1
        code, reason = CloseCode.RESYNC, "took no data for too long: reconnect"
        log.info("WebSocket client took no data for %s s: closed", session.limits.send_timeout_s)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the client left while we were sending
    finally:
        client_left = reader.done()
        subscription.close()
        if clients.unwatch(session.principal, subscription):
            code, reason, client_left = CloseCode.UNAUTHENTICATED, "the key was revoked", False
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    return None if client_left else (code, reason)
