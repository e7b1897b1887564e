"""Embedded amqtt broker (run by the hub in a child process; a plain or a TLS listener), and
mqtt:// / mqtts:// URL parsing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.session import Session

from hub.security.broker import EmbeddedLock

__all__ = ["BrokerError", "EmbeddedBroker", "ListenerTls", "is_tls_url", "parse_mqtt_url"]

_PLAIN_SCHEMES = ("mqtt", "tcp")
_TLS_SCHEMES = ("mqtts",)


class BrokerError(RuntimeError):
    """The broker could not be started or the broker URL is unusable."""


def _checked(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port or None) of a broker URL; raises BrokerError without echoing a
    password the URL may hold."""
    parsed = urlparse(url)
    shown = url if parsed.password is None else url.replace(f":{parsed.password}@", ":***@", 1)
    try:
        port = parsed.port
    except ValueError:
        raise BrokerError(f"broker URL {shown!r} has an invalid port") from None
    if parsed.scheme not in _PLAIN_SCHEMES + _TLS_SCHEMES or not parsed.hostname:
        raise BrokerError(
            f"broker URL {shown!r} must look like mqtt://HOST[:1883] or mqtts://HOST[:8883]"
        )
    return parsed.scheme, parsed.hostname, port


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """Split mqtt://host:port or mqtts://host:port into (host, port); the port defaults to
    1883, for mqtts:// (MQTT over TLS) to 8883. User name and password in the URL are
    ignored here (the hub's settings take them out of it)."""
    scheme, host, port = _checked(url)
    return host, port or (8883 if scheme in _TLS_SCHEMES else 1883)


def is_tls_url(url: str) -> bool:
    """True for mqtts:// (MQTT over TLS), False for mqtt://; raises BrokerError otherwise."""
    return _checked(url)[0] in _TLS_SCHEMES


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class _SnapshotIterationDict(dict[str, list[tuple[Session, int]]]):
    """amqtt's topic-filter -> subscribers table, iterated over a copy of its keys.

    amqtt 0.12.1 `Broker._handle_client_session` loops `for topic in self._subscriptions` with
    an `await` inside (sending retained messages to the client that just connected); another
    client subscribing to a new filter meanwhile grows the dict and the loop dies with
    `RuntimeError: dictionary changed size during iteration` (a traceback when many clients
    connect at once, as in `etp demo`). Iterating over a snapshot makes that loop safe."""

    def __iter__(self) -> Iterator[str]:
        """Iterate over the filters present when iteration starts."""
        return iter(list(self.keys()))


# Room for the fixed header, topic and packet id around the largest accepted payload (as
# hub.security.broker gives Mosquitto's max_packet_size).
_PACKET_OVERHEAD_BYTES = 1024


class PacketTooLargeError(AMQTTError):
    """A client sent a packet larger than the broker accepts (its connection is closed)."""


class _LimitedReader(ReaderAdapter):
    """Refuses to read a packet part larger than `limit_bytes` (amqtt reads a packet's
    variable header and payload with one read each, so this caps the packet size before its
    bytes are buffered; the client's connection is then closed)."""

    def __init__(self, inner: ReaderAdapter, limit_bytes: int) -> None:
        self._inner = inner
        self._limit_bytes = limit_bytes
        self.exceeded = False

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes; raises PacketTooLargeError above the limit."""
        if n > self._limit_bytes:
            self.exceeded = True
            raise PacketTooLargeError(f"packet of {n} bytes is larger than {self._limit_bytes}")
        return await self._inner.read(n)

    def feed_eof(self) -> None:
        """Pass EOF on."""
        self._inner.feed_eof()


class _ReplayReader(ReaderAdapter):
    """Reads what `recorded` holds first, then from `inner`; records what it reads from
    `inner` when `record` is set (to parse a CONNECT twice, see `_Broker`)."""

    def __init__(self, inner: ReaderAdapter, recorded: bytes = b"", record: bool = False) -> None:
        self._inner = inner
        self._pending = recorded
        self.record = record
        self.recorded = bytearray()

    async def read(self, n: int = -1) -> bytes:
        """Up to n bytes (exactly n from a stream), replayed bytes first."""
        if self._pending and n != -1:
            data, self._pending = self._pending[:n], self._pending[n:]
            if len(data) < n:
                data += await self._inner.read(n - len(data))
        elif self._pending:
            data, self._pending = self._pending + await self._inner.read(n), b""
        else:
            data = await self._inner.read(n)
        if self.record:
            self.recorded += data
        return data

    def feed_eof(self) -> None:
        """Pass EOF on."""
        self._inner.feed_eof()


class _Broker(Broker):
    """amqtt 0.12.1's Broker with the defects of its post-CONNECT retained delivery fixed.

    After a client connects, amqtt 0.12.1 sends it the retained messages matching EVERY topic
    filter any client has subscribed to (the loop in `_handle_client_session` walks the whole
    `_subscriptions` table without checking who subscribed). A battery connecting after the hub
    subscribed to `etp/v1/site/bess/+/birth` thus received every other battery's retained
    birth. Here a client only gets the retained messages of filters it subscribed to itself
    (MQTT 3.1.1 §3.3.1.3), and that loop iterates over a snapshot (see
    `_SnapshotIterationDict`). hub/transport/README.md has a reproduction."""

    def __init__(
        self,
        config: BrokerConfig,
        max_message_bytes: int | None = None,
        *,
        authenticate_first: bool = False,
    ) -> None:
        super().__init__(config)
        self._subscriptions = _SnapshotIterationDict()
        self._max_message_bytes = max_message_bytes
        self._authenticate_first = authenticate_first

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        """Serve a connection; with `max_message_bytes`, its packets are capped at that plus
        header room (like Mosquitto's max_packet_size: a larger one closes the connection)."""
        if self._max_message_bytes is None:
            await super()._client_connected(listener_name, reader, writer)
            return
        limited = _LimitedReader(reader, self._max_message_bytes + _PACKET_OVERHEAD_BYTES)
        try:
            await super()._client_connected(listener_name, limited, writer)
        finally:
            if limited.exceeded:  # amqtt leaves a socket open when its CONNECT was too large
                with contextlib.suppress(Exception):
                    await writer.close()

    async def _initialize_client_session(
        self, reader: ReaderAdapter, writer: WriterAdapter, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        """With `authenticate_first`: a CONNECT the auth plugins refuse is answered (CONNACK
        not authorized) before it can touch the session table.

        amqtt 0.12.1 looks up the CONNECT's client id first: with clean session it deletes the
        session (and subscriptions) of the client using that id, without it it writes the new
        user name, password and will into that session and then takes its connection over; only
        afterwards does it check the password. Anyone reaching the port could thus cut the hub
        off by sending its client id. Here the CONNECT is read and authenticated first, and a
        client id whose session belongs to another user is refused too (as Mosquitto's
        use_username_as_clientid prevents); amqtt then reads the same bytes again and proceeds
        as usual."""
        if not self._authenticate_first:
            return await super()._initialize_client_session(
                reader, writer, remote_address, remote_port
            )
        recording = _ReplayReader(reader, record=True)
        try:
            _, candidate = await BrokerProtocolHandler.init_from_connect(
                recording, writer, self.plugins_manager
            )
        except NoDataError as exc:
            raise AMQTTError(exc) from exc
        except MQTTError:
            await writer.close()
            raise
        known = self._sessions.get(candidate.client_id or "")
        if (
            known is not None and known[0].username != candidate.username
        ) or not await self._authenticate(candidate, self.listeners_config["default"]):
            await ConnackPacket.build(0, NOT_AUTHORIZED).to_stream(writer)
            await writer.close()
            raise MQTTError(
                f"refused CONNECT from {remote_address}:{remote_port} "
                f"(user {candidate.username or '-'!r})"
            )
        return await super()._initialize_client_session(
            _ReplayReader(reader, bytes(recording.recorded)), writer, remote_address, remote_port
        )

    async def _handle_message_delivery(
        self, client_session: Session, handler: Any, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """Drop a message whose payload is larger than `max_message_bytes` (as Mosquitto's
        message_size_limit does; amqtt has no such limit). Packets much larger than that do
        not get this far (`_client_connected`)."""
        message = wait_deliver.result()
        data = getattr(message, "data", None)
        if self._max_message_bytes is not None and data and len(data) > self._max_message_bytes:
            logging.getLogger(__name__).info(
                "dropped an oversized message",
                extra={"bytes": len(data), "client_id": client_session.client_id},
            )
            return True
        return bool(await super()._handle_message_delivery(client_session, handler, wait_deliver))

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        """Send the retained messages matching `subscription` only if `session` holds it."""
        subscribers = self._subscriptions.get(subscription[0], ())
        if any(other.client_id == session.client_id for other, _ in subscribers):
            await super()._publish_retained_messages_for_subscription(subscription, session)


@dataclass(frozen=True)
class ListenerTls:
    """The embedded broker's TLS listener: its certificate and key (PEM), and the CA a client
    certificate must chain to when a client presents one (clients need none)."""

    certfile: Path
    keyfile: Path
    cafile: Path | None = None

    def args(self) -> list[str]:
        """Command-line arguments of the broker child process."""
        extra = ["--cafile", str(self.cafile)] if self.cafile else []
        return ["--certfile", str(self.certfile), "--keyfile", str(self.keyfile), *extra]


def _listener(host: str, port: int, tls: ListenerTls | None) -> ListenerConfig:
    """amqtt's listener: plain TCP, or TLS (amqtt's server context: TLS 1.2+, the certificate
    chain loaded, client certificates optional and verified against `cafile`)."""
    if tls is None:
        return ListenerConfig(bind=f"{host}:{port}", max_connections=0)
    return ListenerConfig(
        bind=f"{host}:{port}",
        max_connections=0,
        ssl=True,
        certfile=tls.certfile,
        keyfile=tls.keyfile,
        cafile=tls.cafile,
    )


def _plugins(lock: EmbeddedLock | None) -> dict[str, Any]:
    """amqtt plugins: anyone (open), or hub.security.amqtt_plugins reading the lock's files."""
    if lock is None:
        return {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}}
    files = {"password_file": str(lock.password_file), "acl_file": str(lock.acl_file)}
    return {
        "hub.security.amqtt_plugins.SiteAuthPlugin": files,
        "hub.security.amqtt_plugins.SiteTopicPlugin": files,
    }


async def _start_amqtt(
    host: str,
    port: int,
    tls: ListenerTls | None = None,
    lock: EmbeddedLock | None = None,
    max_message_bytes: int | None = None,
) -> Broker:
    for name in ("amqtt", "transitions"):
        logging.getLogger(name).setLevel(logging.WARNING)
    config = BrokerConfig(
        listeners={"default": _listener(host, port, tls)},
        plugins=_plugins(lock),
    )
    broker = _Broker(config, max_message_bytes, authenticate_first=lock is not None)
    await broker.start()
    return broker


async def _stop_amqtt(broker: Broker) -> None:
    try:
        await asyncio.wait_for(broker.shutdown(), 5)
    except Exception:  # shutting down: nothing left to protect
        logging.getLogger(__name__).debug("embedded broker shutdown error", exc_info=True)


class EmbeddedBroker:
    """An amqtt broker listening on host:port, without the per-packet logging plugins.

    By default it runs in a child process of the hub (`python -m hub.transport.broker`) so the
    broker and the hub each get a core; nothing to install or set up. The child exits when
    stopped, and also on its own when the hub dies (its stdin pipe from the hub closes).
    `in_process=True` runs it in the caller's event loop instead. With `lock` (see
    hub.security.broker.embedded_lock) it admits only the accounts in the lock's password file
    and applies its topic ACL; `max_message_bytes` drops larger messages."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        in_process: bool = False,
        tls: ListenerTls | None = None,
        lock: EmbeddedLock | None = None,
        max_message_bytes: int | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.in_process = in_process
        self.tls = tls
        self.lock = lock
        self.max_message_bytes = max_message_bytes
        self._broker: Broker | None = None
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        """The mqtt:// (mqtts:// with TLS) URL clients use."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker child process (None when in-process or stopped)."""
        return self._process.pid if self._process is not None else None

    async def start(self, timeout_s: float = 20.0) -> None:
        """Start listening; raises BrokerError if the port is taken or the broker fails."""
        if not _port_free(self.host, self.port):
            raise BrokerError(
                f"port {self.host}:{self.port} is in use: pick another with --mqtt-port "
                "or use an external broker with --mqtt-url"
            )
        if self.in_process:
            try:
                self._broker = await _start_amqtt(
                    self.host, self.port, self.tls, self.lock, self.max_message_bytes
                )
            except Exception as exc:
                raise BrokerError(f"embedded broker failed to start on {self.url}: {exc}") from exc
            return
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.transport.broker",
            "--host",
            self.host,
            "--port",
            str(self.port),
            *(self.tls.args() if self.tls else []),
            *self._lock_args(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the hub only; the hub stops the broker
        )
        assert self._process.stdout is not None
        try:
            line = await asyncio.wait_for(self._process.stdout.readline(), timeout_s)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            await self.stop()
            raise BrokerError(
                f"embedded broker failed to start on {self.url} (see the error above); "
                "pick another port with --mqtt-port or use --mqtt-url"
            )

    def _lock_args(self) -> list[str]:
        args = []
        if self.lock is not None:
            args += ["--password-file", str(self.lock.password_file)]
            args += ["--acl-file", str(self.lock.acl_file)]
        if self.max_message_bytes is not None:
            args += ["--max-message-bytes", str(self.max_message_bytes)]
        return args

    async def stop(self) -> None:
        """Shut the broker down (idempotent)."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await _stop_amqtt(broker)
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 8)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


async def _serve(
    host: str,
    port: int,
    tls: ListenerTls | None = None,
    lock: EmbeddedLock | None = None,
    max_message_bytes: int | None = None,
) -> int:
    """Child-process body: run the broker until SIGTERM/SIGINT or until stdin closes."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def _parent_gone() -> None:
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(0)
            stop.set()

    try:
        broker = await _start_amqtt(host, port, tls, lock, max_message_bytes)
    except Exception as exc:
        sys.stderr.write(f"embedded broker failed to start on {host}:{port}: {exc}\n")
        return 1
    with contextlib.suppress(OSError, ValueError):
        loop.add_reader(0, _parent_gone)
    gc.collect()
    gc.freeze()  # the broker's startup objects: out of full GC passes
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await stop.wait()
    await _stop_amqtt(broker)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m hub.transport.broker --host H --port P`: the broker child process."""
    parser = argparse.ArgumentParser(description="ETP embedded amqtt broker (child process)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--certfile", type=Path, help="TLS listener: certificate (PEM)")
    parser.add_argument("--keyfile", type=Path, help="TLS listener: its private key (PEM)")
    parser.add_argument("--cafile", type=Path, help="TLS listener: CA of client certificates")
    parser.add_argument("--password-file", type=Path, help="locked: accounts ($7$ hashes)")
    parser.add_argument("--acl-file", type=Path, help="locked: the topic ACL (Mosquitto format)")
    parser.add_argument("--max-message-bytes", type=int, help="drop larger message payloads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    tls = ListenerTls(args.certfile, args.keyfile, args.cafile) if args.certfile else None
    lock = None
    if args.password_file is not None or args.acl_file is not None:
        if args.password_file is None or args.acl_file is None:
            parser.error("--password-file and --acl-file go together")
        lock = EmbeddedLock(args.password_file, args.acl_file)
    serve = _serve(args.host, args.port, tls, lock, args.max_message_bytes)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve)
    return uvloop.run(serve)


if __name__ == "__main__":
    sys.exit(main())
