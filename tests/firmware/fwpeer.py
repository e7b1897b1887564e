"""A CPython peer for firmware integration tests: plays the hub and aggregators over MQTT."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import aiomqtt

from shared_etp.frame import (
    Keyring,
    Receiver,
    Sender,
    derive_key,
    derive_notice_key,
    encode_notice,
)
from shared_etp.topics import device_topic, notice_topic, parse_device_topic


class Peer:
    """Signs requests as any bidder for any device, collects the device topics' traffic."""

    def __init__(self, url: str, site: str, master: bytes, epoch: int = 1):
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 1883
        self.site = site
        self.master = master
        self.epoch = epoch
        self._senders: dict[tuple[int, int], Sender] = {}
        self.keyring = Keyring()
        self.receiver = Receiver(self.keyring, max_skew_ms=5000)
        self.births: dict[int, list[dict]] = {}
        self.deaths: dict[int, list[dict]] = {}
        self.statuses: dict[int, list[dict]] = {}
        self.responses: list[dict] = []
        self.raw: list[tuple[str, bytes]] = []
        self._waiters: list[tuple[Callable[[dict], bool], asyncio.Future]] = []
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task | None = None

    def sender(self, src: int, device: int) -> Sender:
        """The Sender for frames from src to device (key_device, kid=device)."""
        key = (src, device)
        if key not in self._senders:
            self._senders[key] = Sender(src, device, derive_key(self.master, device), self.epoch)
        return self._senders[key]

    async def __aenter__(self) -> Peer:
        self._client = aiomqtt.Client(self.host, self.port, identifier=None)
        await self._client.__aenter__()
        sock = self._client._client.socket()  # paho leaves Nagle on: 40 ms per round trip
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self._client.subscribe(f"etp/v1/{self.site}/bess/+/+", qos=1)
        self._task = asyncio.create_task(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.__aexit__(None, None, None)

    async def _pump(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            topic = message.topic.value
            payload = bytes(message.payload)  # type: ignore[arg-type]
            parsed = parse_device_topic(topic)
            if parsed is None:
                continue
            _, device, leaf = parsed
            if leaf == "req":
                continue
            self.raw.append((topic, payload))
            if device not in self.keyring:
                self.keyring.add(device, derive_key(self.master, device), owner=device)
            try:
                msg = self.receiver.open(payload)
            except Exception:
                continue
            msg["_device"] = device
            msg["_leaf"] = leaf
            {"birth": self.births, "death": self.deaths, "status": self.statuses}.get(
                leaf, {}
            ).setdefault(device, []).append(msg)
            if leaf == "resp":
                self.responses.append(msg)
            for predicate, future in list(self._waiters):
                if not future.done() and predicate(msg):
                    future.set_result(msg)

    async def wait_for(self, predicate: Callable[[dict], bool], timeout: float = 5.0) -> dict:
        """The first message (already seen or future) matching predicate."""
        for seen in self.responses + [m for v in self.births.values() for m in v] + [
            m for v in self.deaths.values() for m in v
        ]:
            if predicate(seen):
                return seen
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, future))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.remove((predicate, future))

    async def send(self, device: int, src: int, msg_type: int, **fields: Any) -> bytes:
        """Publish a signed request to a device; returns the frame (for replay tests)."""
        frame, _ = self.sender(src, device).frame(msg_type, dst=device, **fields)
        await self.publish_raw(device, frame)
        return frame

    async def publish_raw(self, device: int, frame: bytes) -> None:
        """Publish bytes to a device's request topic as they are."""
        assert self._client is not None
        await self._client.publish(device_topic(self.site, device, "req"), frame, qos=1)

    async def request(self, device: int, src: int, msg_type: int, timeout: float = 5.0,
                      **fields: Any) -> dict:
        """Send a request and wait for the response addressed to src echoing its id."""
        sender = self.sender(src, device)
        frame, msg = sender.frame(msg_type, dst=device, **fields)
        waiter = asyncio.ensure_future(self.wait_for(
            lambda m: m["_leaf"] == "resp" and m["_device"] == device and m["dst"] == src
            and m["id"] == msg["id"],
            timeout,
        ))
        await asyncio.sleep(0)
        await self.publish_raw(device, frame)
        return await waiter

    async def notice(self, device: int, leaf: str, kind: int, data: Any) -> None:
        """Publish a retained market notice as the hub, signed with `device`'s notice key."""
        assert self._client is not None
        frame = encode_notice(kind, data, 0, device, derive_notice_key(self.master, device))
        await self.publish_notice(device, leaf, frame, retain=True)

    async def publish_notice(self, device: int, leaf: str, frame: bytes, retain: bool) -> None:
        """Publish bytes on a device's notice topic as they are (forgeries too)."""
        assert self._client is not None
        await self._client.publish(notice_topic(self.site, device, leaf), frame, qos=1,
                                   retain=retain)
