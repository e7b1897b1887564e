"""The hub's MQTT connection: connect (TCP or TLS, optional credentials), subscribe, publish,
reconnect with back-off, and a bounded intake between the socket and the handlers. Bytes only."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from hub.transport.broker import BrokerError, is_tls_url, parse_mqtt_url
from hub.transport.mqtt import (
    MqttClient,
    MqttConnectRefusedError,
    MqttError,
    MqttTlsError,
    TlsConfigError,
    Will,
    tls_context,
)

__all__ = ["Intake", "LinkConfig", "LinkConfigError", "LinkDownError", "MqttLink"]

log = structlog.get_logger(__name__)
_client_numbers = itertools.count(1)


class LinkDownError(RuntimeError):
    """A publish was attempted while the MQTT connection is down."""


class LinkConfigError(ValueError):
    """The link cannot be set up as configured (a TLS file that cannot be loaded, a URL that
    is not mqtt:// or mqtts://, TLS files given for a plain connection)."""


# What an operator changes when the broker refuses the hub: named once, used in log lines.
_FIX_CREDENTIALS = (
    "check the hub's MQTT user name and password "
    "(--mqtt-username / --mqtt-password, ETP_MQTT_USERNAME / ETP_MQTT_PASSWORD)"
)
_FIX_NOT_AUTHORIZED = (
    "the broker does not let this user connect: check the user name and password "
    "(--mqtt-username / --mqtt-password, ETP_MQTT_USERNAME / ETP_MQTT_PASSWORD) and the "
    "broker's access rules"
)
_FIX_CA = (
    "check the CA the hub trusts (--mqtt-ca-file, ETP_MQTT_CA_FILE) and that the host in "
    "--mqtt-url (ETP_MQTT_URL) is a name the broker's certificate holds"
)
_FIX_HANDSHAKE = (
    "check that --mqtt-url (ETP_MQTT_URL) points at the broker's TLS port, and the client "
    "certificate if the broker requires one (--mqtt-cert-file / --mqtt-key-file, "
    "ETP_MQTT_CERT_FILE / ETP_MQTT_KEY_FILE)"
)
_FIX_FILES = {
    "ca_file": "--mqtt-ca-file (ETP_MQTT_CA_FILE)",
    "cert_file": "--mqtt-cert-file / --mqtt-key-file (ETP_MQTT_CERT_FILE / ETP_MQTT_KEY_FILE)",
}


def _fix_for(exc: MqttError) -> str | None:
    """The setting to change for a connect failure that retrying alone will not cure."""
    if isinstance(exc, MqttConnectRefusedError):
        return {4: _FIX_CREDENTIALS, 5: _FIX_NOT_AUTHORIZED}.get(exc.code)
    if isinstance(exc, MqttTlsError):
        return _FIX_CA if "not trusted" in str(exc) else _FIX_HANDSHAKE
    return None


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
    """Where and how to connect; subscriptions are re-made on every reconnect.

    `url` is mqtt://HOST[:1883] or mqtts://HOST[:8883] (TLS: the broker's certificate is
    verified against `ca_file`, or the system's CAs, and must name HOST); `cert_file` and
    `key_file` are the client certificate for brokers that ask for one."""

    url: str
    client_id: str = ""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    subscriptions: Sequence[tuple[str, int]] = ()
    keepalive_s: int = 30
    will: tuple[str, bytes, int, bool] | None = None  # topic, payload, qos, retain
    on_connect: Sequence[tuple[str, bytes, int, bool]] = field(default_factory=tuple)
    # Reconnect waits: 0.2 s doubling to 1 s. The hub is the one client every battery waits
    # for after a broker outage, and a refused connect costs next to nothing, so it retries
    # at least once a second (with 5 s it came back ~3 s after the boards).
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 1.0

    def tls(self) -> ssl.SSLContext | None:
        """The TLS context for an mqtts:// URL (None for mqtt://); raises LinkConfigError."""
        try:
            tls = is_tls_url(self.url)
        except BrokerError as exc:
            raise LinkConfigError(str(exc)) from None
        if not tls:
            if self.ca_file or self.cert_file or self.key_file:
                raise LinkConfigError(
                    f"TLS files are set but the broker URL {self.url} is not mqtts://: "
                    "use mqtts://HOST[:8883] or drop the CA / certificate settings"
                )
            return None
        try:
            return tls_context(
                str(self.ca_file) if self.ca_file else None,
                str(self.cert_file) if self.cert_file else None,
                str(self.key_file) if self.key_file else None,
            )
        except TlsConfigError as exc:
            raise LinkConfigError(f"{exc}; fix {_FIX_FILES[exc.which]}") from None


class MqttLink:
    """One MQTT connection: hands every received (topic, payload) to `on_message`.

    It reconnects with exponential back-off after any failure, a refused login or a failed
    TLS handshake included: each distinct failure is logged once (with the setting to fix
    when retrying alone cannot cure it), identical repeats only at debug level; `last_error`
    holds the latest one until a connection succeeds. Received messages pass through a
    bounded `Intake` (status frames are shed first under overload), after the `admit` gate if
    one is given (it counts what it drops); `on_message` is called in
    the event loop for each message and must not block; errors it raises are counted and
    logged, never allowed to stop the receive loop.
    """

    def __init__(
        self,
        config: LinkConfig,
        on_message: Callable[[str, bytes], None],
        max_queued: int = 20000,
        admit: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.config = config
        self.on_message = on_message
        self._admit = admit  # a gate before the queue (flood protection); False: dropped
        self.connected = asyncio.Event()
        self.received = 0
        self.published = 0
        self.publish_errors = 0
        self.reconnects = 0
        self.failed_attempts = 0  # consecutive connect failures; 0 once connected
        self.last_error: str | None = None
        self.intake = Intake(on_message, max_queued)
        self._tls = config.tls()  # raises LinkConfigError now, not on every reconnect
        self._refused = asyncio.Event()  # the broker refused the hub / TLS failed, last attempt
        self._client: MqttClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._intake_task: asyncio.Task[None] | None = None
        self._stopping = False
        self._extra: set[tuple[str, int]] = set()  # add_subscriptions (a hub worker's batteries)
        self._client_id = config.client_id or f"etp-hub-{next(_client_numbers)}"

    @property
    def handler_errors(self) -> int:
        """Messages whose handler raised."""
        return self.intake.handler_errors

    async def start(self, wait_s: float | None = 10.0) -> None:
        """Start the connection loop; optionally wait until the first connection is up.

        Raises LinkDownError if it is not up within `wait_s`, or at once when the broker
        refused the hub or the TLS handshake failed (waiting would not change that); the link
        keeps retrying in the background either way, until stop()."""
        self._intake_task = asyncio.create_task(self.intake.run(), name="mqtt-intake")
        self._task = asyncio.create_task(self._run(), name=f"mqtt-link-{self._client_id}")
        if not wait_s:
            return
        up = asyncio.ensure_future(self.connected.wait())
        refused = asyncio.ensure_future(self._refused.wait())
        try:
            await asyncio.wait((up, refused), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            up.cancel()
            refused.cancel()
        if not self.connected.is_set():
            why = self.last_error or "no answer; is it running?"
            raise LinkDownError(f"could not connect to MQTT broker {self.config.url}: {why}")

    async def stop(self) -> None:
        """Disconnect cleanly (the will is not sent) and stop reconnecting."""
        self._stopping = True
        for task in (self._task, self._intake_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self.connected.clear()

    async def add_subscriptions(self, topics: Sequence[tuple[str, int]]) -> None:
        """Subscribe to more filters now (if connected) and after every reconnect."""
        new = [t for t in topics if t not in self._extra]
        self._extra.update(new)
        client = self._client
        if new and client is not None and client.connected:
            with contextlib.suppress(MqttError):  # lost meanwhile: the reconnect makes them
                for first in range(0, len(new), 500):
                    await client.subscribe(new[first : first + 500])

    async def remove_subscriptions(self, topics: Sequence[tuple[str, int]]) -> None:
        """Unsubscribe from filters added with add_subscriptions."""
        gone = [t for t in topics if t in self._extra]
        self._extra.difference_update(gone)
        client = self._client
        if gone and client is not None and client.connected:
            with contextlib.suppress(MqttError):
                for first in range(0, len(gone), 500):
                    await client.unsubscribe([topic for topic, _ in gone[first : first + 500]])

    def _receive(self, topic: str, payload: bytes) -> None:
        self.received += 1
        if self._admit is None or self._admit(topic, payload):
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
                tls=self._tls,
                username=self.config.username,
                password=self.config.password,
            )
            try:
                try:
                    await client.connect()
                    if self.config.subscriptions:
                        await client.subscribe(self.config.subscriptions)
                    extra = sorted(self._extra)
                    for first in range(0, len(extra), 500):
                        await client.subscribe(extra[first : first + 500])
                except MqttError as exc:
                    client.abort()
                    if self._stopping:
                        break
                    self._connect_failed(exc, backoff)
                else:
                    self._client = client
                    for topic, payload, qos, retain in self.config.on_connect:
                        await client.publish_wait(topic, payload, qos, retain)
                    self._connect_succeeded()
                    backoff = self.config.backoff_initial_s
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

    def _connect_succeeded(self) -> None:
        if self.failed_attempts:
            log.info(
                "mqtt connected", url=self.config.url, after_failed_attempts=self.failed_attempts
            )
        else:
            log.debug("mqtt connected", url=self.config.url, client=self._client_id)
        self.failed_attempts = 0
        self.last_error = None
        self._refused.clear()
        self.connected.set()

    def _connect_failed(self, exc: MqttError, retry_in_s: float) -> None:
        """One line per distinct failure, naming the setting to fix when there is one."""
        self.failed_attempts += 1
        error = str(exc)
        repeated = error == self.last_error
        self.last_error = error
        fix = _fix_for(exc)
        if fix is not None:
            self._refused.set()
        else:
            self._refused.clear()
        if repeated:
            log.debug(
                "mqtt connect failed again",
                url=self.config.url,
                error=error,
                attempts=self.failed_attempts,
                retry_in_s=retry_in_s,
            )
        elif fix is not None:
            log.error(
                "mqtt broker refused the hub; retrying",
                url=self.config.url,
                error=error,
                fix=fix,
                retry_in_s=retry_in_s,
            )
        else:
            log.warning(
                "mqtt connect failed; retrying", url=self.config.url, error=error,
                retry_in_s=retry_in_s,
            )
