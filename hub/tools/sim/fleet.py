"""CPython battery simulator for load tests: firmware's NodeCore over shared MQTT connections.

Each simulated battery is the real transport-free firmware core (firmware/etp_node/core.py)
with the firmware's battery model; many of them share one MQTT connection (a connection can
carry only one last will, so per-device wills need `connections == count`; otherwise the hub's
status deadline is what detects a lost battery, as with any silent device).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from firmware.etp_node.audit import AuditLog
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient, MqttError, Will
from shared_etp.frame import derive_key, derive_notice_key
from shared_etp.topics import CLEARING, REPUTATION, device_wildcard, notice_wildcard

__all__ = ["SimConfig", "SimFleet"]

_AUDIT_FILE_BYTES = 64 * 1024 * 1024

log = structlog.get_logger(__name__)


@dataclass
class SimConfig:
    """A fleet of simulated batteries."""

    mqtt_url: str
    site: str
    master_secret: bytes
    count: int = 10
    first_device_id: int = 1
    connections: int = 1
    seed: int = 1
    tick_ms: int = 100
    overrides: dict[str, Any] = field(default_factory=dict)
    capacity_wh: tuple[int, int] = (8000, 16000)
    reserve_mc: tuple[int, int] = (18000, 24000)
    audit_dir: Path | None = None  # the batteries' trails (default: a temporary directory)


class _Audit(AuditLog):
    """A simulated battery's audit trail: the firmware's own AuditLog on disk (so the battery
    answers what became of an auction from it, as a board does from flash), files large enough
    that a run never rotates a record out, and a copy of every record in memory (for
    committed_trades)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(str(directory), max_bytes=_AUDIT_FILE_BYTES, files=2)
        self.records: list[dict[str, Any]] = []

    def append(self, record: dict[str, Any]) -> bool:
        written = bool(super().append(record))
        if written:
            self.records.append(dict(record))
        return written


class SimFleet:
    """Starts `count` NodeCores on `connections` MQTT clients and pumps their traffic."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        rng = random.Random(config.seed)
        self.cores: dict[int, NodeCore] = {}
        self.audits: dict[int, _Audit] = {}
        self._audit_tmp: tempfile.TemporaryDirectory[str] | None = None
        audit_root = config.audit_dir
        if audit_root is None:
            self._audit_tmp = tempfile.TemporaryDirectory(prefix="etp-sim-audit-")
            audit_root = Path(self._audit_tmp.name)
        for index in range(config.count):
            device_id = config.first_device_id + index
            node_config = {
                "device_id": device_id,
                "site": config.site,
                "key": derive_key(config.master_secret, device_id),
                "notice_key": derive_notice_key(config.master_secret, device_id),
                "reserve_mc": rng.randrange(config.reserve_mc[0], config.reserve_mc[1] + 1, 500),
                "pct_for_sale": 8000,
                "dynamic_reserve": True,
                "hold_timeout_ms": 3000,
                "min_reputation": 2000,
                "status_interval_ms": 5000,
                "floor_wh": 500,
                "delivery_s": 900,
                "scarcity_gain_pct": 50,
                "market_weight_pct": 50,
            }
            node_config.update(config.overrides)
            capacity = rng.randrange(config.capacity_wh[0], config.capacity_wh[1] + 1, 500)
            audit = _Audit(Path(audit_root) / f"battery-{device_id}")
            self.cores[device_id] = NodeCore(
                node_config,
                SimBattery(capacity_wh=capacity, soc=rng.randrange(7000, 9500)),
                audit,
            )
            self.audits[device_id] = audit
        self._clients: list[MqttClient] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._owner: dict[int, int] = {}  # device id -> connection index
        self.published = 0
        self.received = 0
        self.publish_errors = 0
        self.sent_by_type: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self._stop = False
        self.expect_disconnect = False  # the broker is going away on purpose: no warnings
        self.muted: set[int] = set()  # devices that stay connected but say nothing
        self._crashed: set[int] = set()  # connection indexes cut abruptly (no reconnect)
        self.on_publish: Callable[[str, bytes], None] | None = None
        self.lag_samples: list[float] = []  # how late the simulator's loop ran (ms)

    def committed_trades(self) -> dict[int, tuple[int, int, int, int]]:
        """auction id -> (device, bidder, price, energy) for every trade a battery committed."""
        trades = {}
        for device_id, audit in self.audits.items():
            for record in audit.records:
                if record.get("k") == "trade":
                    trades[record["auc"]] = (device_id, record["b"], record["p"], record["e"])
        return trades

    def mute(self, device_id: int) -> None:
        """The battery falls silent (answers nothing, no status) but its link stays up."""
        self.muted.add(device_id)

    def crash(self, device_id: int) -> None:
        """Cut the battery's TCP connection without DISCONNECT, so the broker fires its will.

        Needs one connection per battery (`connections == count`); it does not reconnect."""
        index = self._owner[device_id]
        members = [d for d, i in self._owner.items() if i == index]
        if members != [device_id]:
            raise ValueError("crash() needs one MQTT connection per battery (connections=count)")
        self._crashed.add(index)
        self.muted.add(device_id)
        self._clients[index].abort()

    async def start(self, timeout_s: float = 20.0) -> None:
        """Connect every client, subscribe, publish births; returns when all are connected."""
        device_ids = sorted(self.cores)
        groups = max(1, min(self.config.connections, len(device_ids) or 1))
        ready = [asyncio.Event() for _ in range(groups)]
        for index in range(groups):
            members = device_ids[index::groups]
            for device_id in members:
                self._owner[device_id] = index
            self._tasks.append(
                asyncio.create_task(
                    self._connection(index, members, ready[index]), name=f"sim-conn-{index}"
                )
            )
        self._tasks.append(asyncio.create_task(self._ticker(), name="sim-ticker"))
        self._tasks.append(asyncio.create_task(self._watch_lag(), name="sim-lag"))
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in ready)), timeout_s)
        self.connected.set()

    async def stop(self) -> None:
        """Disconnect every client (cleanly: no wills are sent)."""
        self._stop = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    def _publish(self, index: int, topic: str, frame: bytes) -> None:
        if index >= len(self._clients):
            return
        client = self._clients[index]
        leaf = topic.rsplit("/", 1)[-1]
        qos = 0 if leaf == "status" else 1
        retain = leaf == "birth"
        try:
            client.publish(topic, frame, qos, retain)
        except MqttError:
            self.publish_errors += 1
            return
        self.published += 1
        self.sent_by_type[leaf] += 1
        if self.on_publish is not None:
            self.on_publish(topic, frame)

    def _handler(self, index: int, members: list[int]) -> Callable[[str, bytes], None]:
        """The receive callback of one connection: each frame to the battery it is for (a
        request on etp/v1/<site>/bess/<id>/req, a market notice on etp/v1/<site>/market/<id>/
        <kind>: each battery has its own, signed with its own notice key)."""
        member_set = set(members)
        cores = self.cores
        muted = self.muted
        publish = self._publish

        def deliver(device_id: int, topic: str, payload: bytes) -> None:
            if device_id in muted:
                return
            try:
                out = cores[device_id].handle(topic, payload)
            except Exception:
                log.exception("simulated battery failed to handle a frame", device=device_id)
                return
            for out_topic, frame in out:
                publish(index, out_topic, frame)

        def handle(topic: str, payload: bytes) -> None:
            self.received += 1
            parts = topic.split("/")
            if len(parts) == 6 and parts[3] in ("bess", "market") and parts[4].isdigit():
                device_id = int(parts[4])
                if device_id in member_set:
                    deliver(device_id, topic, payload)

        return handle

    async def _connection(self, index: int, members: list[int], ready: asyncio.Event) -> None:
        host, port = parse_mqtt_url(self.config.mqtt_url)
        site = self.config.site
        handler = self._handler(index, members)
        alone = len(members) == 1
        while not self._stop:
            will = None
            if alone:
                will_topic, will_frame = self.cores[members[0]].will()
                will = Will(will_topic, will_frame, qos=1)
            client = MqttClient(
                host,
                port,
                f"etp-sim-{self.config.seed}-{members[0]}-{index}",
                handler,
                keepalive_s=30,
                will=will,
            )
            try:
                await client.connect()
                while len(self._clients) <= index:
                    self._clients.append(client)
                self._clients[index] = client
                if alone:  # the board's own topics, as a board subscribes
                    topics = self.cores[members[0]].subscriptions()
                else:
                    topics = [
                        device_wildcard(site, "req"),
                        notice_wildcard(site, REPUTATION),
                        notice_wildcard(site, CLEARING),
                    ]
                await client.subscribe([(topic, 1) for topic in topics])
                for device_id in members:
                    topic, frame = self.cores[device_id].birth()
                    self._publish(index, topic, frame)
                    topic, frame = self.cores[device_id].status()
                    self._publish(index, topic, frame)
                ready.set()
                await client.wait_closed()
            except MqttError as exc:
                if self._stop or index in self._crashed:
                    return
                if not self.expect_disconnect:
                    log.warning("simulator connection lost", error=str(exc))
                await asyncio.sleep(0.5)
            except asyncio.CancelledError:
                await client.disconnect()  # stopping: cleanly, so no will is published
                raise

    async def _watch_lag(self, interval_s: float = 0.05) -> None:
        loop = asyncio.get_running_loop()
        while not self._stop:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.lag_samples.append(max(0.0, (loop.time() - due) * 1000.0))
            if len(self.lag_samples) > 20000:
                del self.lag_samples[:10000]

    async def _ticker(self) -> None:
        """Tick every core once per period, in small slices so replies are not held up."""
        period = self.config.tick_ms / 1000.0
        loop = asyncio.get_running_loop()
        slice_size = 50
        while not self._stop:
            started = loop.time()
            items = list(self.cores.items())
            for start in range(0, len(items), slice_size):
                for device_id, core in items[start : start + slice_size]:
                    if device_id in self.muted:
                        continue
                    index = self._owner.get(device_id, 0)
                    for topic, frame in core.tick():
                        self._publish(index, topic, frame)
                await asyncio.sleep(0)
            await asyncio.sleep(max(0.0, period - (loop.time() - started)))
