"""MQTT transport for the hub: connect, subscribe, publish, reconnect. Bytes only."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog

from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient, MqttError, Will

__all__ = ["Intake", "LinkConfig", "LinkDownError", "MqttLink"]

log = structlog.get_logger(__name__)
_client_numbers = itertools.count(1)


class LinkDownError(RuntimeError):
    """A publish was attempted while the MQTT connection is down."""


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
        self._client: MqttClient | None = None
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
        """Queue a publish without waiting for the broker's acknowledgement."""
        client = self._client
        if client is None or not client.connected:
            raise LinkDownError(f"MQTT link to {self.config.url} is down; cannot publish {topic}")
        try:
            client.publish(topic, payload, qos, retain)
        except MqttError as exc:
            self.publish_errors += 1
            raise LinkDownError(f"publish to {topic} failed: {exc}") from exc
        self.published += 1

    async def publish_wait(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish and wait for the broker's acknowledgement (QoS 1)."""
        client = self._client
        if client is None or not client.connected:
            raise LinkDownError(f"MQTT link to {self.config.url} is down; cannot publish {topic}")
        try:
            await client.publish_wait(topic, payload, qos, retain)
        except MqttError as exc:
            self.publish_errors += 1
            raise LinkDownError(f"publish to {topic} failed: {exc}") from exc
        self.published += 1

    async def _run(self) -> None:
        host, port = parse_mqtt_url(self.config.url)
        backoff = self.config.backoff_initial_s
        will = Will(*self.config.will) if self.config.will is not None else None
        while not self._stopping:
            client = MqttClient(
                host,
                port,
                self._client_id,
                self._receive,
                keepalive_s=self.config.keepalive_s,
                will=will,
            )
            try:
                await client.connect()
                self._client = client
                if self.config.subscriptions:
                    await client.subscribe(self.config.subscriptions)
                for topic, payload, qos, retain in self.config.on_connect:
                    await client.publish_wait(topic, payload, qos, retain)
                self.connected.set()
                backoff = self.config.backoff_initial_s
                log.debug("mqtt connected", url=self.config.url, client=self._client_id)
                await client.wait_closed()
            except MqttError as exc:
                if self._stopping:
                    break
                log.warning(
                    "mqtt connection lost", url=self.config.url, error=str(exc), retry_in_s=backoff
                )
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(client.disconnect())
                raise
            finally:
                self._client = None
                self.connected.clear()
            if self._stopping:
                break
            self.reconnects += 1
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.config.backoff_max_s)
