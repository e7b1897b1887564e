"""MQTT transport for the hub (aiomqtt): connect, subscribe, publish, reconnect. Bytes only."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import structlog

from hub.broker import parse_mqtt_url

# Small request/response frames must not wait for Nagle's algorithm (a 40 ms stall against
# delayed ACKs when a PUBACK and a PUBLISH go out back to back).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

__all__ = ["BufferedSocket", "Intake", "LinkConfig", "LinkDownError", "MqttLink", "speed_up"]

log = structlog.get_logger(__name__)
_client_numbers = itertools.count(1)


class LinkDownError(RuntimeError):
    """A publish was attempted while the MQTT connection is down."""


class BufferedSocket:
    """A socket whose recv() is served from one large read.

    paho reads every packet with several tiny recv() calls (command byte, each length byte,
    body): one system call each. This wrapper reads up to 16 KiB at a time and hands paho the
    bytes from memory; `pending()` tells aiomqtt's reader to keep going while bytes are
    buffered (the same hook paho uses for TLS sockets). Everything else goes to the socket.
    The read size bounds how long one reader callback runs (all buffered packets are handled
    before the loop gets back control): 16 KiB is ~120 frames, a few ms."""

    def __init__(self, sock: Any, read_size: int = 16384) -> None:
        self._sock = sock
        self._read_size = read_size
        self._buf = b""
        self._pos = 0

    def recv(self, size: int) -> bytes:
        """Up to `size` buffered bytes; reads the socket only when the buffer is empty."""
        pos = self._pos
        if pos >= len(self._buf):
            data = self._sock.recv(self._read_size)  # BlockingIOError / b"" pass through
            if len(data) <= size:
                return data  # type: ignore[no-any-return]
            self._buf = data
            pos = 0
        end = pos + size
        chunk = self._buf[pos:end]
        self._pos = end
        if end >= len(self._buf):
            self._buf = b""
            self._pos = 0
        return chunk

    def pending(self) -> int:
        """Bytes received but not yet handed to paho."""
        return len(self._buf) - self._pos

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def speed_up(client: aiomqtt.Client, on_message: Callable[[str, bytes], None]) -> None:
    """Tune an aiomqtt client before it connects: buffered reads, TCP_NODELAY, and each
    received (topic, payload) handed straight to `on_message` from paho's read callback
    instead of building aiomqtt Message objects in aiomqtt's unbounded queue (which is then
    unused: do not iterate `client.messages`). `on_message` must not raise or block."""
    paho = client._client
    create_socket = paho._create_socket

    def _create_socket() -> Any:
        sock = create_socket()
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return BufferedSocket(sock)
        return sock

    def _on_message(_client: Any, _userdata: Any, message: Any) -> None:
        on_message(message.topic, message.payload)

    paho._create_socket = _create_socket  # type: ignore[method-assign]
    paho.on_message = _on_message


async def wait_disconnected(client: aiomqtt.Client) -> None:
    """Return (raising aiomqtt.MqttError) when the client's connection is lost."""
    disconnected = client._disconnected
    try:
        await asyncio.shield(disconnected)
    except asyncio.CancelledError:
        if not disconnected.done():
            raise
    except Exception as exc:
        raise aiomqtt.MqttError(f"disconnected: {exc}") from exc
    raise aiomqtt.MqttError("disconnected")


class Intake:
    """Bounded queue of received messages between the socket reader and the handler.

    Above `limit` queued messages, status frames (the flood a fleet can produce) are dropped
    and counted; request/response frames (the trade path) are still queued up to
    `hard_limit`, and beyond that dropped, counted and logged as errors: never silently."""

    def __init__(self, handler: Callable[[str, bytes], None], limit: int = 20000) -> None:
        self.handler = handler
        self.limit = limit
        self.hard_limit = limit * 4
        self.queue: deque[tuple[str, bytes]] = deque()
        self.dropped_status = 0
        self.dropped_trade_path = 0
        self.handler_errors = 0
        self.high_water = 0
        self._wake = asyncio.Event()

    def put(self, topic: str, payload: bytes) -> None:
        """Called for every received message (from the reader callback; never blocks)."""
        queue = self.queue
        size = len(queue)
        if size >= self.limit:
            if topic.endswith("/status"):
                self.dropped_status += 1
                if self.dropped_status == 1 or self.dropped_status % 10000 == 0:
                    log.warning(
                        "incoming queue full: dropping status frames",
                        queued=size,
                        dropped=self.dropped_status,
                    )
                return
            if size >= self.hard_limit:
                self.dropped_trade_path += 1
                if self.dropped_trade_path <= 100 or self.dropped_trade_path % 1000 == 0:
                    log.error(
                        "incoming queue overflow: dropped a trade-path frame",
                        topic=topic,
                        queued=size,
                        dropped=self.dropped_trade_path,
                    )
                return
        queue.append((topic, payload))
        if size >= self.high_water:
            self.high_water = size + 1
        if not size:
            self._wake.set()

    async def run(self, batch: int = 200) -> None:
        """Hand queued messages to the handler, yielding to the loop every `batch` messages."""
        queue = self.queue
        handler = self.handler
        while True:
            await self._wake.wait()
            self._wake.clear()
            done = 0
            while queue:
                topic, payload = queue.popleft()
                try:
                    handler(topic, payload)
                except Exception:
                    self.handler_errors += 1
                    log.exception("message handler failed", topic=topic)
                done += 1
                if done >= batch:
                    done = 0
                    await asyncio.sleep(0)


@dataclass
class LinkConfig:
    """Where and how to connect; subscriptions are re-made on every reconnect."""

    url: str
    client_id: str = ""
    subscriptions: Sequence[tuple[str, int]] = ()
    keepalive_s: int = 30
    will: tuple[str, bytes, int, bool] | None = None  # topic, payload, qos, retain
    on_connect: Sequence[tuple[str, bytes, int, bool]] = field(default_factory=tuple)
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0


class MqttLink:
    """One MQTT connection: hands every received (topic, payload) to `on_message`.

    Received messages pass through a bounded `Intake` (status frames are shed first under
    overload); `on_message` is called in the event loop for each message and must not block;
    errors it raises are counted and logged, never allowed to stop the receive loop.
    """

    def __init__(
        self,
        config: LinkConfig,
        on_message: Callable[[str, bytes], None],
        max_queued: int = 20000,
    ) -> None:
        self.config = config
        self.on_message = on_message
        self.connected = asyncio.Event()
        self.received = 0
        self.published = 0
        self.publish_errors = 0
        self.reconnects = 0
        self.intake = Intake(on_message, max_queued)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._intake_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._client_id = config.client_id or f"etp-hub-{next(_client_numbers)}"

    @property
    def handler_errors(self) -> int:
        """Messages whose handler raised."""
        return self.intake.handler_errors

    async def start(self, wait_s: float | None = 10.0) -> None:
        """Start the connection loop; optionally wait until the first connection is up."""
        self._intake_task = asyncio.create_task(self.intake.run(), name="mqtt-intake")
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self._client_id}")
        if wait_s:
            try:
                await asyncio.wait_for(self.connected.wait(), wait_s)
            except TimeoutError:
                raise LinkDownError(
                    f"could not connect to MQTT broker {self.config.url} within {wait_s:.0f} s; "
                    "is it running?"
                ) from None

    async def stop(self) -> None:
        """Disconnect cleanly (the will is not sent) and stop reconnecting."""
        self._stopping = True
        for task in (self._task, self._intake_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.connected.clear()

    def _receive(self, topic: str, payload: bytes) -> None:
        self.received += 1
        self.intake.put(topic, payload)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Queue a publish without waiting for the broker's acknowledgement.

        aiomqtt's publish() awaits the PUBACK; the paho client underneath queues the packet
        and retransmits at QoS 1 on its own, which is what the hot path needs."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDownError(f"MQTT link to {self.config.url} is down; cannot publish {topic}")
        info = client._client.publish(topic, payload, qos, retain)
        if info.rc != 0:
            self.publish_errors += 1
            raise LinkDownError(f"publish to {topic} failed (paho rc {info.rc})")
        self.published += 1

    async def publish_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1)."""
        client = self._client
        if client is None or not self.connected.is_set():
            raise LinkDownError(f"MQTT link to {self.config.url} is down; cannot publish {topic}")
        await client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1

    async def _run(self) -> None:
        host, port = parse_mqtt_url(self.config.url)
        backoff = self.config.backoff_initial_s
        will = None
        if self.config.will is not None:
            topic, payload, qos, retain = self.config.will
            will = aiomqtt.Will(topic, payload, qos, retain)
        while not self._stopping:
            try:
                client = aiomqtt.Client(
                    host,
                    port,
                    identifier=self._client_id,
                    keepalive=self.config.keepalive_s,
                    will=will,
                    clean_session=True,
                    max_inflight_messages=5000,
                    max_queued_outgoing_messages=0,
                    timeout=10,
                    socket_options=NODELAY,
                )
                speed_up(client, self._receive)
                async with client:
                    self._client = client
                    for topic, qos in self.config.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    for topic, payload, qos, retain in self.config.on_connect:
                        await client.publish(topic, payload, qos=qos, retain=retain)
                    self.connected.set()
                    backoff = self.config.backoff_initial_s
                    log.debug("mqtt connected", url=self.config.url, client=self._client_id)
                    await wait_disconnected(client)
            except aiomqtt.MqttError as exc:
                if self._stopping:
                    break
                log.warning(
                    "mqtt connection lost", url=self.config.url, error=str(exc), retry_in_s=backoff
                )
            finally:
                self._client = None
                self.connected.clear()
            if self._stopping:
                break
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max_s)
