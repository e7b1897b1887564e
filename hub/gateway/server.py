"""The gateway's HTTP server bounds: header size and count, body size, slow and idle clients,
open connections (a uvicorn h11 protocol subclass the runtime's uvicorn.Config uses)."""

# Why h11 and a subclass: httptools (uvicorn's "auto" choice) exposes no limit on a request
# head, so a 64 MB header is buffered whole. h11 refuses a head still incomplete after
# `max_incomplete_event_size` bytes (RemoteProtocolError with status hint 431) without
# buffering more than one socket read beyond it. What neither uvicorn nor h11 bounds (a head
# that arrives complete in one read, header count, body size, a client that drips its request,
# a connection that never sends anything, the number of open sockets) is checked here.

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
import structlog
from uvicorn.protocols.http.h11_impl import H11Protocol

from hub.settings import Settings

__all__ = [
    "BoundedH11Connection",
    "BoundedH11Protocol",
    "ConnectionPool",
    "HttpLimits",
    "Refusal",
    "bounded_protocol_class",
    "https_options",
    "request_head_refusal",
]

log = structlog.get_logger(__name__)

# TLS 1.2 suites with forward secrecy and AEAD only (TLS 1.3 suites are all fine and are not
# set by this string); uvicorn's default ("TLSv1") also admits CBC and RSA key exchange.
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def https_options(tls: Any) -> dict[str, Any]:
    """uvicorn.Config keyword arguments serving HTTPS with the certificate the site's TLS
    plan (hub.security.tls.SiteTls) chose, or none for plain HTTP. uvicorn's context is
    TLS 1.2 or newer (PROTOCOL_TLS_SERVER); the same h11 protocol (and its bounds) runs over
    it, so WebSockets at /ws become wss://."""
    if tls is None or tls.gateway_cert is None:
        return {}
    return {
        "ssl_certfile": str(tls.gateway_cert),
        "ssl_keyfile": str(tls.gateway_key),
        "ssl_ciphers": _TLS12_CIPHERS,
    }


@dataclass(frozen=True)
class HttpLimits:
    """What one client may cost the hub's HTTP server (see the ETP_HTTP_* settings)."""

    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    max_body_bytes: int = 1024 * 1024
    request_timeout_s: float = 10.0
    keep_alive_timeout_s: int = 5
    max_connections: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits the hub's ETP_HTTP_* settings ask for."""
        return cls(
            max_header_bytes=settings.http_max_header_bytes,
            max_header_count=settings.http_max_header_count,
            max_body_bytes=settings.http_max_body_bytes,
            request_timeout_s=settings.http_request_timeout_s,
            keep_alive_timeout_s=settings.http_keep_alive_timeout_s,
            max_connections=settings.http_max_connections,
        )


@dataclass(frozen=True)
class Refusal:
    """A request the server answers itself, with `status`, and then closes."""

    status: int
    reason: str


def request_head_refusal(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], limits: HttpLimits
) -> Refusal | None:
    """Whether a parsed request head breaks a limit: too many header fields or bytes (431),
    a declared body too large (413). Pure, so it is tested without a socket."""
    if len(headers) > limits.max_header_count:
        return Refusal(431, f"{len(headers)} header fields, at most {limits.max_header_count}")
    # Request line and "name: value\r\n" lines as parsed (h11 strips optional whitespace):
    # the head's size on the wire, give or take that whitespace.
    head_bytes = len(method) + len(target) + 12 + sum(len(n) + len(v) + 4 for n, v in headers)
    if head_bytes > limits.max_header_bytes:
        return Refusal(431, f"head of {head_bytes} bytes, at most {limits.max_header_bytes}")
    for name, value in headers:
        if name.lower() == b"content-length" and int(value) > limits.max_body_bytes:
            return Refusal(413, f"body of {int(value)} bytes, at most {limits.max_body_bytes}")
    return None


class BoundedH11Connection(h11.Connection):
    """h11's server side, refusing heads and bodies over the limits as protocol errors (which
    uvicorn answers and closes), remembering the status to answer with."""

    def __init__(self, limits: HttpLimits) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self.limits = limits
        self.refusal: Refusal | None = None
        self._body_bytes = 0

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            if self.refusal is None:
                status = exc.error_status_hint  # 431: h11's buffer is over the head limit
                reason = (f"request head over {self.limits.max_header_bytes} bytes"
                          if status == 431 else str(exc))
                self.refusal = Refusal(status, reason)
            raise
        refusal: Refusal | None = None
        if isinstance(event, h11.Request):
            self._body_bytes = 0
            refusal = request_head_refusal(
                event.method, event.target, list(event.headers), self.limits
            )
        elif isinstance(event, h11.Data):
            self._body_bytes += len(event.data)  # chunked bodies declare no length up front
            if self._body_bytes > self.limits.max_body_bytes:
                refusal = Refusal(413, f"body over {self.limits.max_body_bytes} bytes")
        if refusal is not None:
            self.refusal = refusal
            raise h11.RemoteProtocolError(refusal.reason, error_status_hint=refusal.status)
        return event


@dataclass
class ConnectionPool:
    """State shared by one server's connections: which are idle (oldest first, the ones
    evicted to make room for a new client at the cap) and refusals counted by status."""

    idle: OrderedDict[BoundedH11Protocol, None] = field(default_factory=OrderedDict)
    refused: Counter[int] = field(default_factory=Counter)
    evicted_idle: int = 0
    unread_responses: int = 0
    _last_logged_s: dict[int, float] = field(default_factory=dict)

    def refuse(self, status: int, reason: str, client: Any) -> None:
        """Count a refusal and log it with its reason, at most once a second per status (a
        flood must not turn into a flood of log lines)."""
        self.refused[status] += 1
        now_s = time.monotonic()
        if now_s - self._last_logged_s.get(status, -1.0) >= 1.0:
            self._last_logged_s[status] = now_s
            log.warning("http refused", status=status, reason=reason, client=client,
                        refused_so_far=self.refused[status])

    def summary(self) -> dict[str, Any]:
        """For /api/v1/status: requests and connections refused, by status; idle closed."""
        return {
            "refused": {str(status): count for status, count in sorted(self.refused.items())},
            "evicted_idle": self.evicted_idle,
            "unread_responses": self.unread_responses,
        }

    def evict_oldest_idle(self) -> bool:
        """Close the connection idle the longest; False when none is idle."""
        while self.idle:
            victim, _ = self.idle.popitem(last=False)
            if not victim.transport.is_closing():
                victim.close_idle()
                self.evicted_idle += 1
                return True
        return False


_RAW_503 = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 20\r\nconnection: close\r\nretry-after: 1\r\n\r\nToo many connections"
)
_RAW_408 = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 15\r\nconnection: close\r\n\r\nRequest Timeout"
)


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the hub's bounds; built per server by
    `bounded_protocol_class` (limits and pool are class attributes shared by its connections).

    Timers: a connection that sends nothing is closed after the keep-alive timeout, as one
    idle between requests is (uvicorn only arms that timer after a response). From the first
    byte of a request, its head and body must arrive within `request_timeout_s`, however slowly
    they drip (uvicorn has no such timer): else 408 and close. The app's own time is not
    counted: the timer stops once the request is fully received. A client that stops reading
    its response (the transport's buffer stays over its high-water mark) gets the same time to
    resume before the connection is aborted (a graceful close would wait for it forever)."""

    limits: ClassVar[HttpLimits]
    pool: ClassVar[ConnectionPool]
    conn: BoundedH11Connection

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = BoundedH11Connection(self.limits)
        self.timeout_keep_alive = self.limits.keep_alive_timeout_s
        self._request_deadline: asyncio.TimerHandle | None = None
        self._write_deadline: asyncio.TimerHandle | None = None
        self._upgraded = False  # the transport now belongs to a WebSocket protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        open_now = sum(1 for c in self.connections if not c.transport.is_closing())
        super().connection_made(transport)
        if open_now >= self.limits.max_connections and not self.pool.evict_oldest_idle():
            self.pool.refuse(503, f"{open_now} connections open, none idle", self.client)
            transport.write(_RAW_503)
            transport.close()
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self.pool.idle[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_deadline()
        self._cancel_write_deadline()
        self.pool.idle.pop(self, None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.pool.idle.pop(self, None)
        super().data_received(data)
        self._follow_request()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_request()
        if (
            not self.transport.is_closing()
            and self._request_deadline is None
            and self.conn.their_state is h11.IDLE
        ):
            self.pool.idle[self] = None

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_deadline is None:
            self._write_deadline = self.loop.call_later(
                self.limits.request_timeout_s, self._response_not_read
            )

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_deadline()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        # The transport now belongs to the WebSocket protocol: none of this request's timers
        # may fire on it (a 408 written into a WebSocket stream corrupts it).
        self._upgraded = True
        self._cancel_request_deadline()
        self._cancel_write_deadline()
        self.pool.idle.pop(self, None)
        super().handle_websocket_upgrade(event)

    def send_400_response(self, msg: str) -> None:
        """Answer a refused request with its status (431, 413, else 400) and close."""
        refusal = self.conn.refusal or Refusal(400, msg)
        self.pool.refuse(refusal.status, refusal.reason, self.client)
        self._cancel_request_deadline()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app, if running, sees http.disconnect
            self.cycle.message_event.set()
            if self.cycle.response_started:
                self.transport.close()
                return
        body = refusal.reason.encode("ascii", "replace")
        try:
            for event in (
                h11.Response(
                    status_code=refusal.status,
                    headers=[(b"content-type", b"text/plain; charset=utf-8"),
                             (b"connection", b"close")],
                ),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event) or b"")
        except h11.LocalProtocolError:
            pass  # no response can be sent in this state: closing is the answer
        self.transport.close()

    def close_idle(self) -> None:
        """Close this connection (idle: no request in progress) to make room for another."""
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_handler()

    def _follow_request(self) -> None:
        """Run the request deadline while a request is arriving, stop it once it has."""
        if self._upgraded or self.transport.is_closing():
            self._cancel_request_deadline()
            return
        state = self.conn.their_state
        arriving = state is h11.SEND_BODY or (
            state is h11.IDLE and bool(self.conn.trailing_data[0])
        )
        if not arriving:
            self._cancel_request_deadline()
        elif self._request_deadline is None:
            self._request_deadline = self.loop.call_later(
                self.limits.request_timeout_s, self._request_too_slow
            )

    def _request_too_slow(self) -> None:
        self._request_deadline = None
        if self.transport.is_closing():
            return
        self.pool.refuse(408, f"request not received within {self.limits.request_timeout_s} s",
                         self.client)
        if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
            self.transport.write(_RAW_408)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()

    def _response_not_read(self) -> None:
        self._write_deadline = None
        self.pool.unread_responses += 1
        log.warning("http response unread: aborting", client=self.client,
                    timeout_s=self.limits.request_timeout_s)
        self.transport.abort()

    def _cancel_write_deadline(self) -> None:
        if self._write_deadline is not None:
            self._write_deadline.cancel()
            self._write_deadline = None

    def _cancel_request_deadline(self) -> None:
        if self._request_deadline is not None:
            self._request_deadline.cancel()
            self._request_deadline = None


def bounded_protocol_class(limits: HttpLimits) -> type[BoundedH11Protocol]:
    """A protocol class for one server: its connections share `limits` and one pool."""
    return type(
        "BoundedH11Protocol",
        (BoundedH11Protocol,),
        {"limits": limits, "pool": ConnectionPool()},
    )
