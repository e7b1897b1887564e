"""The legacy bridge: each legacy battery appears to the hub as an ordinary ETP battery.

One `BridgedBattery` per legacy battery: its own MQTT connection (its own last will, its own
device key derive_key(master, N) as every board has), a BridgeCore (the firmware's NodeCore)
over a LegacyPack fed by the battery's reports, and a LegacyLink to the battery. One worker
task per battery feeds the core, in order, every request from the hub and every tick, so a
BidConfirm being committed on the legacy battery is never overtaken by a Terminate or an
expiry. `LegacyBridge` runs several of them in one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from firmware.etp_node.audit import AuditLog
from hub.legacy.core import BridgeCore
from hub.legacy.link import LegacyLink, LegacyLinkError, LinkConfig
from hub.legacy.pack import PRICE_STEP_MC, LegacyPack
from hub.transport.broker import is_tls_url, parse_mqtt_url
from hub.transport.mqtt import MqttClient, MqttError, Will, tls_context
from shared_etp.frame import derive_key
from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    QUERY,
    REASON_BELOW_RESERVE,
    REASON_DEVICE_FAULT,
)

__all__ = [
    "LEGACY_DEVICE_IDS",
    "BridgeConfig",
    "BridgedBattery",
    "LegacyBridge",
    "LegacyTarget",
    "is_legacy_device",
]

log = structlog.get_logger(__name__)

# Device ids kept for bridged legacy batteries by convention (the demo and its summary count
# trades of these ids as legacy trades). The bridge takes any id 1..65535 it is given.
LEGACY_DEVICE_IDS = range(60000, 65536)
_AUDIT_FILE_BYTES = 4 * 1024 * 1024


def is_legacy_device(device_id: int) -> bool:
    """True for ids in the legacy range (60000-65535)."""
    return device_id in LEGACY_DEVICE_IDS


@dataclass
class LegacyTarget:
    """One legacy battery: where it listens and the ETP device id it trades under."""

    host: str
    port: int
    device_id: int
    # From a provisioning bundle (`etp device add N`), if the site has them: its key
    # generation's key and its broker login; else derive_key(master, N) and the bridge's login.
    key: bytes | None = field(default=None, repr=False)
    notice_key: bytes | None = field(default=None, repr=False)
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)


@dataclass
class BridgeConfig:
    """A bridge process: its batteries, the hub's broker and site, the site master secret."""

    targets: list[LegacyTarget]
    mqtt_url: str
    site: str
    master_secret: bytes | None = field(default=None, repr=False)  # unless every target has keys
    audit_dir: Path | None = None  # default: a temporary directory
    tick_ms: int = 100
    poll_interval_s: float = 1.0
    backoff_max_s: float = 5.0
    hold_timeout_ms: int = 3000
    status_interval_ms: int = 5000
    min_reputation: int = 2000
    mqtt_username: str | None = None
    mqtt_password: str | None = field(default=None, repr=False)
    mqtt_ca_file: Path | None = None  # mqtts://: the CA the broker's certificate chains to
    overrides: dict[str, Any] = field(default_factory=dict)  # NodeCore config entries


class BridgedBattery:
    """One legacy battery behind the bridge, an ETP battery to the hub."""

    def __init__(
        self,
        config: BridgeConfig,
        target: LegacyTarget,
        audit_root: Path,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.target = target
        self.device_id = target.device_id
        self.pack = LegacyPack()
        key, notice_key = target.key, target.notice_key
        if key is None or notice_key is None:
            if config.master_secret is None:
                raise ValueError(f"device {target.device_id}: no key (no bundle, no master secret)")
            key = key or derive_key(config.master_secret, target.device_id)
            notice_key = notice_key or derive_key(config.master_secret, 0)
        node_config: dict[str, Any] = {
            "device_id": target.device_id,
            "site": config.site,
            "key": key,
            "notice_key": notice_key,
            "reserve_mc": 0,  # the battery's salePrice, once it reported it
            "pct_for_sale": 0,
            "dynamic_reserve": False,  # the prototype's rule: its reserve, nothing else
            "hold_timeout_ms": config.hold_timeout_ms,
            "min_reputation": config.min_reputation,
            "status_interval_ms": config.status_interval_ms,
            "floor_wh": 0,
            **config.overrides,
        }
        self.audit = AuditLog(
            str(audit_root / f"legacy-{target.device_id}"), max_bytes=_AUDIT_FILE_BYTES, files=2
        )
        self.core = BridgeCore(node_config, self.pack, self.audit)
        self.link = LegacyLink(
            LinkConfig(
                host=target.host,
                port=target.port,
                device_id=target.device_id,
                poll_interval_s=config.poll_interval_s,
                backoff_max_s=config.backoff_max_s,
            ),
            self._on_report,
            self._on_link,
        )
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._client: MqttClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._born = False  # a birth went out since the pack first had an offer
        self.mqtt_connected = asyncio.Event()
        self.published: dict[str, int] = {}
        self.legacy_refused = 0  # confirms the legacy battery did not take (BidReject sent)
        self.legacy_uncertain = 0  # confirms written but the link broke before it was sure
        self.link_changes: list[tuple[float, bool]] = []  # (loop time, up)

    # --- legacy side --------------------------------------------------------------------
    def _on_report(self, msg: dict[str, int]) -> None:
        if self.pack.update(msg):
            self.core.sync_offer()

    def _on_link(self, up: bool) -> None:
        self.pack.link_up = up
        self.link_changes.append((asyncio.get_running_loop().time(), up))
        log.info("legacy battery link", device=self.device_id, up=up)
        self._inbox.put_nowait(("", b""))  # wake the worker: the core ticks now

    # --- MQTT side ----------------------------------------------------------------------
    def _publish(self, topic: str, frame: bytes) -> None:
        client = self._client
        if client is None:
            return
        leaf = topic.rsplit("/", 1)[-1]
        try:
            client.publish(topic, frame, 0 if leaf == "status" else 1, leaf == "birth")
        except MqttError:
            return
        self.published[leaf] = self.published.get(leaf, 0) + 1

    def _publish_all(self, frames: list[tuple[str, bytes]] | None) -> None:
        for topic, frame in frames or []:
            self._publish(topic, frame)

    def _on_message(self, topic: str, payload: bytes) -> None:
        self._inbox.put_nowait((topic, payload))

    async def _mqtt(self) -> None:
        host, port = parse_mqtt_url(self.config.mqtt_url)
        while True:
            will_topic, will_frame = self.core.will()
            client = MqttClient(
                host,
                port,
                f"etp-legacy-{self.config.site}-{self.device_id}",
                self._on_message,
                keepalive_s=30,
                will=Will(will_topic, will_frame, qos=1),
                tls=self.tls,
                username=self.target.mqtt_username or self.config.mqtt_username,
                password=self.target.mqtt_password or self.config.mqtt_password,
            )
            try:
                await client.connect()
                await client.subscribe([(topic, 1) for topic in self.core.subscriptions()])
                self._client = client
                self.mqtt_connected.set()
                self._born = False
                self._inbox.put_nowait(("", b""))  # birth from the worker if it has an offer
                await client.wait_closed()
            except MqttError as exc:
                log.warning("bridge lost the broker", device=self.device_id, error=str(exc))
            except asyncio.CancelledError:
                await client.disconnect()  # stopping: cleanly, so no will is published
                raise
            self._client = None
            self.mqtt_connected.clear()
            await asyncio.sleep(1.0)

    # --- the worker: every input of the core, in order ------------------------------------
    async def _worker(self) -> None:
        period = self.config.tick_ms / 1000.0
        loop = asyncio.get_running_loop()
        next_tick = loop.time()
        while True:
            try:
                topic, payload = await asyncio.wait_for(
                    self._inbox.get(), max(0.0, next_tick - loop.time())
                )
            except TimeoutError:
                topic, payload = "", b""
            if topic:
                self._publish_all(self.core.handle(topic, payload))
                while self.core.pending_confirms:
                    msg = self.core.pending_confirms.pop(0)
                    self._publish_all([await self._commit(msg)])
            if not self.pack.reported or self._client is None:
                continue  # nothing to say before the battery's first offer
            if not self._born:
                self._born = True
                self._publish_all([self.core.birth(), self.core.status()])
            if not topic or loop.time() >= next_tick:
                self._publish_all(self.core.tick())
                next_tick = loop.time() + period

    async def _commit(self, msg: dict[str, int]) -> Any:
        """Commit a confirmed sale on the legacy battery as the prototype expects (its Bid at
        the trade's price and energy, its BidAccept, then BidConfirm), then in the core."""
        # The prototype's price has 0.01 c/kWh steps: it is told the price rounded down (what
        # it compares with its reserve, itself in those steps, so no bid passes it wrongly).
        price = msg["price"] - msg["price"] % PRICE_STEP_MC
        energy = msg["ereq"]  # a multiple of 10 Wh (BridgeCore refuses other bids)
        # Reports just before and just after the sale: energy the battery gained by charging
        # counts only between two reports with no sale between them (LegacyPack.update), so
        # the window around a sale is kept short.
        with contextlib.suppress(LegacyLinkError):
            await self.link.request(QUERY)
        try:
            answer = await self.link.request(BID, price=price, ereq=energy)
        except LegacyLinkError as exc:
            log.info("legacy battery did not take a bid", device=self.device_id, error=str(exc))
            self.legacy_refused += 1
            return self.core.refuse_confirm(msg, REASON_DEVICE_FAULT)
        if answer["t"] != BID_ACCEPT:
            self.legacy_refused += 1  # its reserve rose since it last reported it
            return self.core.refuse_confirm(msg, REASON_BELOW_RESERVE)
        try:
            await self.link.send(BID_CONFIRM, price=price, ereq=energy)
        except LegacyLinkError as exc:
            # It may or may not have the confirm: no trade is claimed, and its energy is
            # taken off the budget all the same (the battery may be delivering it).
            log.warning("legacy confirm unsure", device=self.device_id, error=str(exc))
            self.legacy_uncertain += 1
            self.pack.lose(energy)
            return self.core.refuse_confirm(msg, REASON_DEVICE_FAULT)
        self.link.poll_soon()
        return self.core.finish_confirm(msg)

    def start(self) -> None:
        """Connect to the broker and to the legacy battery; trade while both are up."""
        self.link.start()
        self._tasks = [
            asyncio.create_task(self._mqtt(), name=f"legacy-mqtt-{self.device_id}"),
            asyncio.create_task(self._worker(), name=f"legacy-worker-{self.device_id}"),
        ]

    async def stop(self) -> None:
        """Disconnect both sides (cleanly: no will)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.link.stop()

    def trades(self) -> int:
        """Trades committed (on the legacy battery, then by the core)."""
        count: Any = self.core.stats["trades"]
        return int(count)

    def stats(self) -> dict[str, Any]:
        """Figures for a summary: trades, energy, refusals, link state."""
        core_stats = self.core.stats
        return {
            "device_id": self.device_id,
            "legacy": f"{self.target.host}:{self.target.port}",
            "link_up": self.pack.link_up,
            "trades": core_stats["trades"],
            "sold_wh": self.pack.sold_wh,
            "budget_wh": self.pack.offered_wh(),
            "accepted": core_stats["accepted"],
            "rejected": core_stats["rejected"],
            "legacy_refused": self.legacy_refused,
            "legacy_uncertain": self.legacy_uncertain,
            "reconnects": max(0, self.link.connects - 1),
        }


class LegacyBridge:
    """Several legacy batteries through one process."""

    def __init__(self, config: BridgeConfig) -> None:
        ids = [target.device_id for target in config.targets]
        if len(set(ids)) != len(ids):
            raise ValueError("each legacy battery needs its own --device-id")
        self.config = config
        self._audit_tmp: tempfile.TemporaryDirectory[str] | None = None
        audit_root = config.audit_dir
        if audit_root is None:
            self._audit_tmp = tempfile.TemporaryDirectory(prefix="etp-legacy-audit-")
            audit_root = Path(self._audit_tmp.name)
        audit_root.mkdir(parents=True, exist_ok=True)
        # raises TlsConfigError now, naming the file, rather than in a connection task
        ca_file = config.mqtt_ca_file
        tls = (
            tls_context(str(ca_file) if ca_file else None) if is_tls_url(config.mqtt_url) else None
        )
        self.batteries = {
            target.device_id: BridgedBattery(config, target, audit_root, tls)
            for target in config.targets
        }

    async def start(self, timeout_s: float = 10.0) -> None:
        """Start every battery; returns once each has its broker connection."""
        for battery in self.batteries.values():
            battery.start()
        await asyncio.wait_for(
            asyncio.gather(*(b.mqtt_connected.wait() for b in self.batteries.values())),
            timeout_s,
        )

    async def stop(self) -> None:
        """Stop every battery."""
        for battery in self.batteries.values():
            await battery.stop()
        if self._audit_tmp is not None:
            self._audit_tmp.cleanup()

    def trades(self) -> int:
        """Trades committed through the bridge, all batteries."""
        return sum(battery.trades() for battery in self.batteries.values())

    def stats(self) -> list[dict[str, Any]]:
        """Per-battery figures."""
        return [battery.stats() for battery in self.batteries.values()]
