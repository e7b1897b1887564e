"""MQTT transport for the hub (aiomqtt): connect, subscribe, publish, reconnect. Bytes only."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiomqtt
import structlog

from hub.broker import parse_mqtt_url

# Small request/response frames must not wait for Nagle's algorithm (a 40 ms stall against
# delayed ACKs when a PUBACK and a PUBLISH go out back to back).
NODELAY = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)

__all__ = ["LinkConfig", "LinkDownError", "MqttLink"]

log = structlog.get_logger(__name__)
_client_numbers = itertools.count(1)


class LinkDownError(RuntimeError):
    """A publish was attempted while the MQTT connection is down."""


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

    `on_message` is called in the event loop for each message and must not block; errors it
    raises are counted and logged, never allowed to stop the receive loop.
    """

    def __init__(self, config: LinkConfig, on_message: Callable[[str, bytes], None]) -> None:
        self.config = config
        self.on_message = on_message
        self.connected = asyncio.Event()
        self.received = 0
        self.published = 0
        self.publish_errors = 0
        self.handler_errors = 0
        self.reconnects = 0
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._client_id = config.client_id or f"etp-hub-{next(_client_numbers)}"

    async def start(self, wait_s: float | None = 10.0) -> None:
        """Start the connection loop; optionally wait until the first connection is up."""
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
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.connected.clear()

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
                async with aiomqtt.Client(
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
                ) as client:
                    self._client = client
                    for topic, qos in self.config.subscriptions:
                        await client.subscribe(topic, qos=qos)
                    for topic, payload, qos, retain in self.config.on_connect:
                        await client.publish(topic, payload, qos=qos, retain=retain)
                    self.connected.set()
                    backoff = self.config.backoff_initial_s
                    log.debug("mqtt connected", url=self.config.url, client=self._client_id)
                    async for message in client.messages:
                        self.received += 1
                        payload = message.payload
                        if not isinstance(payload, bytes | bytearray):
                            payload = str(payload).encode()
                        try:
                            self.on_message(message.topic.value, bytes(payload))
                        except Exception:
                            self.handler_errors += 1
                            log.exception("message handler failed", topic=message.topic.value)
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
