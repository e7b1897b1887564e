"""A lean asyncio MQTT 3.1.1 client for the hub and the load simulator.

(Over 400 lines for a reason: one protocol client, packet codec and session state together;
kept because it beats aiomqtt clearly on the hub's load: hub/transport/README.md.)

Why not paho/aiomqtt on the hot path: paho builds objects for every packet, reads each packet
with several recv() calls, and writes every outgoing packet with its own send() (plus a wake-up
of the event loop per publish). At thousands of frames per second that is most of the hub's CPU.
This client parses packets from one receive buffer and writes everything queued during one
event-loop iteration with one transport write.

Scope (what the hub needs, nothing more): CONNECT with will, keepalive, clean session and
optional user name/password, over TCP or TLS (an `ssl.SSLContext`: see `tls_context`);
SUBSCRIBE; PUBLISH at QoS 0 and 1 both ways (incoming QoS 1 is acknowledged; outgoing QoS 1 is
tracked until its PUBACK); PINGREQ/PINGRESP with loss detection; DISCONNECT. Clean sessions
only: QoS 1 publishes still unacknowledged when a connection dies are reported as failed to
whoever waits for them (the trade path has its own timeouts and idempotent retries), not
resent. QoS 2 is not used by ETP; a broker sending it gets the connection closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

__all__ = [
    "MqttClient",
    "MqttConnectRefusedError",
    "MqttError",
    "MqttTlsError",
    "TlsConfigError",
    "Will",
    "tls_context",
]

_CONNECT, _CONNACK, _PUBLISH, _PUBACK = 0x10, 0x20, 0x30, 0x40
_SUBSCRIBE, _SUBACK, _PINGREQ, _PINGRESP, _DISCONNECT = 0x82, 0x90, 0xC0, 0xD0, 0xE0
_UNSUBSCRIBE, _UNSUBACK = 0xA2, 0xB0
_PING = bytes((_PINGREQ, 0))
_BYE = bytes((_DISCONNECT, 0))
_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}
_MAX_PACKET = 268_435_455  # the largest remaining length MQTT can express

log = structlog.get_logger(__name__)


class MqttError(Exception):
    """The connection failed, was refused, or is gone; the message says which."""


class MqttConnectRefusedError(MqttError):
    """The broker answered CONNECT with a refusal (`code`: 4 bad user name or password,
    5 not authorized, ...)."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class MqttTlsError(MqttError):
    """The TLS handshake failed: the broker's certificate was not trusted or does not name the
    host, the broker wanted a client certificate, or the port does not speak TLS."""


class TlsConfigError(ValueError):
    """A CA, certificate or key file cannot be loaded (missing, unreadable, not PEM);
    `which` is "ca_file" or "cert_file" (the certificate or its key)."""

    def __init__(self, message: str, which: str) -> None:
        super().__init__(message)
        self.which = which


def tls_context(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> ssl.SSLContext:
    """A client TLS context that verifies the broker: its certificate must chain to `ca_file`
    (the system's trusted CAs when None) and name the host connected to. `cert_file` (with
    `key_file`, unless the key is in the same PEM) is presented when the broker asks for a
    client certificate. Raises TlsConfigError naming the file that cannot be used."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsConfigError(
            f"cannot load the CA file {ca_file}: {_reason(exc)}", "ca_file"
        ) from exc
    if key_file and not cert_file:
        raise TlsConfigError(
            f"a client key ({key_file}) needs its certificate file too", "cert_file"
        )
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load the client certificate {cert_file}"
                + (f" / key {key_file}" if key_file else "")
                + f": {_reason(exc)}",
                "cert_file",
            ) from exc
    return context


def _reason(exc: BaseException) -> str:
    """The readable part of an OSError/SSLError (its strerror/reason, not the errno tuple)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return str(exc.strerror)
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class Will:
    """The last will the broker publishes if this client disappears without DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


def _length(n: int) -> bytes:
    """MQTT variable-length 'remaining length'."""
    if n > _MAX_PACKET:
        raise MqttError(f"packet of {n} bytes is larger than MQTT allows")
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _text(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise MqttError(f"string of {len(data)} bytes is too long for MQTT")
    return struct.pack("!H", len(data)) + data


def _connect_packet(
    client_id: str,
    keepalive_s: int,
    clean: bool,
    will: Will | None,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    flags = 0x02 if clean else 0
    tail = _text(client_id)
    if will is not None:
        flags |= 0x04 | (will.qos & 3) << 3 | (0x20 if will.retain else 0)
        tail += _text(will.topic) + struct.pack("!H", len(will.payload)) + will.payload
    if username is not None:
        flags |= 0x80
        tail += _text(username)
        if password is not None:
            flags |= 0x40
            secret = password.encode()
            tail += struct.pack("!H", len(secret)) + secret
    elif password is not None:
        raise MqttError("MQTT 3.1.1 sends a password only together with a user name")
    body = _text("MQTT") + struct.pack("!BBH", 4, flags, keepalive_s) + tail
    return bytes((_CONNECT,)) + _length(len(body)) + body


class _Protocol(asyncio.Protocol):
    """Bytes in and out for one connection; everything else is MqttClient's."""

    def __init__(self, client: MqttClient) -> None:
        self.client = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.client._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client._received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(exc)


class MqttClient:
    """One MQTT 3.1.1 connection. Use: `await connect()`, `await subscribe([...])`,
    `publish(...)` (returns at once) or `await publish_wait(...)` (returns on PUBACK), and
    `await wait_closed()` to learn when the connection ends (it raises MqttError with the
    reason). Every received PUBLISH is handed to `on_message(topic, payload)` from the event
    loop; it must not block; what it raises is counted in `handler_errors` and logged.
    With `tls` (see `tls_context`) the connection is TLS and the broker's certificate must
    name `host`; `username`/`password` go in CONNECT (never into logs or error messages).
    """

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        on_message: Callable[[str, bytes], None],
        *,
        keepalive_s: int = 30,
        will: Will | None = None,
        clean_session: bool = True,
        connect_timeout_s: float = 10.0,
        max_write_buffer: int = 64 * 1024 * 1024,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.client_id = client_id
        self.on_message = on_message
        self.keepalive_s = keepalive_s
        self.will = will
        self.clean_session = clean_session
        self.connect_timeout_s = connect_timeout_s
        self.max_write_buffer = max_write_buffer
        self.tls = tls
        self.username = username
        self._password = password
        self.received = 0
        self.published = 0
        self.handler_errors = 0
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._next_mid = 0
        self._inflight: dict[int, asyncio.Future[None] | None] = {}
        self._subacks: dict[int, asyncio.Future[bytes]] = {}
        self._connack: asyncio.Future[int] | None = None
        self._closed: asyncio.Future[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        self._pong_due: float | None = None
        self._connected = False

    # ---- public API ----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """CONNACK received and the connection not lost since."""
        return self._connected

    @property
    def inflight(self) -> int:
        """QoS 1 publishes sent and not yet acknowledged."""
        return len(self._inflight)

    async def connect(self) -> None:
        """Open the TCP (or TLS) connection and complete the MQTT handshake. Raises
        MqttTlsError when the TLS handshake fails, MqttConnectRefusedError when the broker
        refuses the CONNECT, MqttError for everything else."""
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._connack = loop.create_future()
        where = f"{self.host}:{self.port}"
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Protocol(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                ),
                self.connect_timeout_s,
            )
        except ssl.SSLCertVerificationError as exc:
            raise MqttTlsError(
                f"TLS: the certificate of {where} is not trusted: {_reason(exc)}"
            ) from exc
        except ssl.SSLError as exc:
            raise MqttTlsError(f"TLS handshake with {where} failed: {_reason(exc)}") from exc
        except ConnectionResetError as exc:
            if self.tls is None:
                raise MqttError(f"cannot connect to {where}: {exc}") from exc
            raise MqttTlsError(
                f"TLS handshake with {where} failed: the broker closed the connection "
                "(a plain listener, or it wants a client certificate)"
            ) from exc
        except (OSError, TimeoutError) as exc:
            raise MqttError(f"cannot connect to {where}: {exc or 'timed out'}") from exc
        assert self._transport is not None
        sock = self._transport.get_extra_info("socket")
        if sock is not None:
            # Small request/response frames must not wait for Nagle's algorithm.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport.write(
            _connect_packet(
                self.client_id,
                self.keepalive_s,
                self.clean_session,
                self.will,
                self.username,
                self._password,
            )
        )
        try:
            code = await asyncio.wait_for(asyncio.shield(self._connack), self.connect_timeout_s)
        except TimeoutError:
            self.abort()
            raise MqttError(f"no CONNACK from {where}") from None
        except MqttTlsError:
            raise
        except MqttError as exc:
            if self.tls is not None:
                # With TLS 1.3 the broker checks a client certificate only after the client
                # finished its handshake: a missing or unaccepted one looks like this.
                raise MqttTlsError(
                    f"{exc} before answering CONNECT (does {where} require a client "
                    "certificate, or not accept this one?)"
                ) from exc
            raise MqttError(
                f"{exc} before answering CONNECT (if {where} is a TLS port, use mqtts://)"
            ) from exc
        if code:
            self.abort()
            reason = _CONNACK_REASONS.get(code, f"code {code}")
            raise MqttConnectRefusedError(
                f"broker {where} refused the connection: {reason}", code
            )
        self._connected = True
        if self.keepalive_s > 0:
            self._pinger = loop.create_task(self._ping_loop(), name=f"mqtt-ping-{self.client_id}")

    async def subscribe(self, topics: Sequence[tuple[str, int]], timeout_s: float = 10.0) -> None:
        """Subscribe to (filter, qos) pairs in one SUBSCRIBE; raises if any is refused."""
        mid = self._mid()
        body = struct.pack("!H", mid) + b"".join(_text(t) + bytes((q,)) for t, q in topics)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = future
        try:
            self._send(bytes((_SUBSCRIBE,)) + _length(len(body)) + body)
            granted = await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MqttError(f"no SUBACK for {[t for t, _ in topics]}") from None
        finally:
            self._subacks.pop(mid, None)
        refused = [t for (t, _), g in zip(topics, granted, strict=False) if g == 0x80]
        if refused or len(granted) != len(topics):
            raise MqttError(f"broker refused the subscription to {refused or topics}")

    async def unsubscribe(self, topics: Sequence[str], timeout_s: float = 10.0) -> None:
        """Unsubscribe from filters in one UNSUBSCRIBE and wait for the UNSUBACK."""
        mid = self._mid()
        body = struct.pack("!H", mid) + b"".join(_text(t) for t in topics)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._subacks[mid] = future  # an UNSUBACK answers with the same packet id
        try:
            self._send(bytes((_UNSUBSCRIBE,)) + _length(len(body)) + body)
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MqttError(f"no UNSUBACK for {list(topics)}") from None
        finally:
            self._subacks.pop(mid, None)

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        """Queue a PUBLISH (sent with everything else queued in this loop iteration)."""
        self._publish(topic, payload, qos, retain, None)

    async def publish_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, timeout_s: float = 10
    ) -> None:
        """Publish and, at QoS 1, wait for the broker's PUBACK (raises MqttError)."""
        if qos == 0:
            self._publish(topic, payload, 0, retain, None)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._publish(topic, payload, qos, retain, future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MqttError(f"no PUBACK for {topic} within {timeout_s} s") from None

    async def wait_closed(self) -> None:
        """Wait until the connection ends; raises MqttError unless disconnect() ended it."""
        if self._closed is None:
            raise MqttError("not connected")
        await asyncio.shield(self._closed)

    async def disconnect(self) -> None:
        """Send DISCONNECT (the broker drops the will) and close."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._flush()
            transport.write(_BYE)
            transport.close()
        self._finish(None)
        if self._closed is not None:
            with contextlib.suppress(MqttError):
                await asyncio.shield(self._closed)

    def abort(self) -> None:
        """Drop the connection without DISCONNECT (the broker publishes the will)."""
        if self._transport is not None:
            self._transport.abort()

    # ---- sending -------------------------------------------------------------------------

    def _mid(self) -> int:
        for _ in range(0xFFFF):
            self._next_mid = self._next_mid % 0xFFFF + 1
            if self._next_mid not in self._inflight and self._next_mid not in self._subacks:
                return self._next_mid
        raise MqttError("65535 packets in flight: the broker is not acknowledging")

    def _publish(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        future: asyncio.Future[None] | None,
    ) -> None:
        if not self._connected:
            raise MqttError(f"not connected to {self.host}:{self.port}")
        if qos not in (0, 1):
            raise MqttError(f"QoS {qos} is not supported (0 or 1)")
        head = _PUBLISH | qos << 1 | (1 if retain else 0)
        name = topic.encode()
        if qos:
            mid = self._mid()
            self._inflight[mid] = future
            variable = struct.pack("!H", len(name)) + name + struct.pack("!H", mid)
        else:
            variable = struct.pack("!H", len(name)) + name
        size = len(variable) + len(payload)
        if size < 128:
            self._send(bytes((head, size)) + variable + payload)
        else:
            self._send(bytes((head,)) + _length(size) + variable + payload)
        self.published += 1

    def _send(self, packet: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise MqttError(f"connection to {self.host}:{self.port} is closed")
        if transport.get_write_buffer_size() > self.max_write_buffer:
            raise MqttError(
                f"{self.host}:{self.port} is not reading: {self.max_write_buffer} bytes queued"
            )
        self._out.append(packet)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def _ping_loop(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.5, self.keepalive_s / 2)
        while self._connected:
            await asyncio.sleep(interval)
            if self._pong_due is not None and loop.time() > self._pong_due:
                self._finish(MqttError(f"no PINGRESP from {self.host}:{self.port}: link is dead"))
                if self._transport is not None:
                    self._transport.abort()
                return
            if self._pong_due is None:
                self._pong_due = loop.time() + self.keepalive_s
            with contextlib.suppress(MqttError):
                self._send(_PING)

    # ---- receiving -----------------------------------------------------------------------

    def _received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        view = memoryview(buffer)
        messages: list[tuple[str, bytes]] = []
        acks: list[bytes] = []
        try:
            used = self._parse(buffer, view, messages, acks)
        except (MqttError, IndexError, UnicodeDecodeError) as exc:
            view.release()
            self._buffer = bytearray()
            self._finish(exc if isinstance(exc, MqttError) else MqttError(f"bad packet: {exc}"))
            if self._transport is not None:
                self._transport.abort()
            return
        view.release()
        if used:
            del buffer[:used]
        if acks and self._transport is not None and not self._transport.is_closing():
            # Acknowledge first, in one write: a broker may hold back its next message to us
            # until it has our PUBACK, and the handlers below can take a while.
            self._transport.write(b"".join(acks))
        on_message = self.on_message
        for topic, payload in messages:
            try:
                on_message(topic, payload)
            except Exception:
                self.handler_errors += 1
                log.exception("MQTT message handler failed", topic=topic)

    def _parse(
        self,
        buffer: bytearray,
        view: memoryview,
        messages: list[tuple[str, bytes]],
        acks: list[bytes],
    ) -> int:
        """Handle every complete packet in the buffer; returns the bytes consumed. PUBLISHes
        go to `messages`, the PUBACKs they need to `acks`."""
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            head = buffer[pos]
            length = buffer[pos + 1]
            start = pos + 2
            if length & 0x80:  # multi-byte remaining length
                length &= 0x7F
                shift = 7
                while True:
                    if start >= size:
                        return pos  # header not complete yet
                    byte = buffer[start]
                    start += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        raise MqttError("malformed remaining length from the broker")
            end = start + length
            if end > size:
                return pos  # the packet is not complete yet
            pos = end
            kind = head & 0xF0
            if kind == _PUBLISH:
                qos = head >> 1 & 3
                topic_end = start + 2 + (buffer[start] << 8 | buffer[start + 1])
                if topic_end > end:
                    raise MqttError("malformed PUBLISH from the broker")
                topic = str(view[start + 2 : topic_end], "utf-8")
                if qos:
                    if qos != 1:
                        raise MqttError("the broker sent a QoS 2 message (never subscribed so)")
                    acks.append(bytes((_PUBACK, 2)) + view[topic_end : topic_end + 2])
                    topic_end += 2
                self.received += 1
                messages.append((topic, bytes(view[topic_end:end])))
            elif kind == _PUBACK:
                future = self._inflight.pop(buffer[start] << 8 | buffer[start + 1], None)
                if future is not None and not future.done():
                    future.set_result(None)
            elif kind == _PINGRESP:
                self._pong_due = None
            elif kind in (_SUBACK, _UNSUBACK):
                pending = self._subacks.get(buffer[start] << 8 | buffer[start + 1])
                if pending is not None and not pending.done():
                    pending.set_result(bytes(view[start + 2 : end]))
            elif kind == _CONNACK:
                if self._connack is not None and not self._connack.done():
                    self._connack.set_result(buffer[start + 1])
            else:
                raise MqttError(f"unexpected packet type 0x{head:02x} from the broker")
        return pos

    def _lost(self, exc: Exception | None) -> None:
        where = f"{self.host}:{self.port}"
        if isinstance(exc, ssl.SSLError):  # e.g. TLS 1.3: the broker wanted a client certificate
            self._finish(MqttTlsError(f"TLS with {where} failed: {_reason(exc)}"))
            return
        why = exc or "closed by the broker"
        self._finish(MqttError(f"connection to {where} lost: {why}"))

    def _finish(self, error: MqttError | None) -> None:
        """The connection is over: fail everything still waiting on it (once)."""
        self._connected = False
        self._out.clear()
        if self._pinger is not None and self._pinger is not asyncio.current_task():
            self._pinger.cancel()
        self._pinger = None
        failure = error or MqttError("disconnected")
        for future in self._inflight.values():
            if future is not None and not future.done():
                future.set_exception(failure)
        self._inflight.clear()
        for pending in self._subacks.values():
            if not pending.done():
                pending.set_exception(failure)
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(failure)
            self._connack.exception()  # connect() reports it; never "exception never retrieved"
        closed = self._closed
        if closed is not None and not closed.done():
            if error is None:
                closed.set_result(None)
            else:
                closed.set_exception(error)
                closed.exception()  # waiters still get it; nobody waiting is not an error
