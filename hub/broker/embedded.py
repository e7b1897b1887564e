"""Embedded amqtt broker started inside the hub process, and mqtt:// URL parsing."""

from __future__ import annotations

import asyncio
import logging
import socket
from urllib.parse import urlparse

from amqtt.broker import Broker
from amqtt.contexts import BrokerConfig, ListenerConfig

__all__ = ["BrokerError", "EmbeddedBroker", "parse_mqtt_url"]


class BrokerError(RuntimeError):
    """The broker could not be started or the broker URL is unusable."""


def parse_mqtt_url(url: str) -> tuple[str, int]:
    """Split mqtt://host:port into (host, port); port defaults to 1883."""
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise BrokerError(f"broker URL {url!r} must look like mqtt://HOST:PORT")
    return parsed.hostname, parsed.port or 1883


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


class EmbeddedBroker:
    """An amqtt broker listening on host:port, without the per-packet logging plugins."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._broker: Broker | None = None

    @property
    def url(self) -> str:
        """The mqtt:// URL clients use."""
        return f"mqtt://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start listening; raises BrokerError if the port is taken."""
        if not _port_free(self.host, self.port):
            raise BrokerError(
                f"port {self.host}:{self.port} is in use: pick another with --mqtt-port "
                "or use an external broker with --mqtt-url"
            )
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        config = BrokerConfig(
            listeners={
                "default": ListenerConfig(bind=f"{self.host}:{self.port}", max_connections=0)
            },
            plugins={"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        )
        self._broker = Broker(config)
        try:
            await self._broker.start()
        except Exception as exc:
            raise BrokerError(f"embedded broker failed to start on {self.url}: {exc}") from exc

    async def stop(self) -> None:
        """Shut the broker down (idempotent)."""
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                await asyncio.wait_for(broker.shutdown(), 5)
            except Exception:  # shutting down: nothing left to protect
                logging.getLogger(__name__).debug("embedded broker shutdown error", exc_info=True)
