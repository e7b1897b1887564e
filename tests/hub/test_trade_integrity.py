"""Trace tests of trade integrity: the link to a battery is lost at every step of an auction.

The hub side is real (AuctionDriver with its sessions, reconciler, aggregators, the SQLite
store); the battery is the firmware's own NodeCore with its audit trail on disk (a simulated
board's flash). Between them a link that the test cuts: frames lost without a trace, the link
down (publishing fails, the hub knows), or the battery's power cut (it reboots with its flash
but not its RAM). Every step of the flow is cut once (PLAN): the Query, a Bid, the BidConfirm,
the Terminates that tell a battery an auction is over and that ask it about an unverified
trade, and the answer to each. Afterwards:

- every trade the store counts (verified) is one the battery committed, at that price and
  energy, to that bidder (its audit trail has the `trade` record);
- every trade the battery committed is in the store, verified;
- nothing is left undecided: the battery's own record settled every unverified trade.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from firmware.etp_node.audit import AuditLog
from firmware.etp_node.audit_dump import read_all
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from hub.auctions.config import AuctionConfig
from hub.auctions.driver import AuctionDriver
from hub.buyers.aggregator import Aggregator, default_aggregators
from hub.buyers.bidding import Buyers
from hub.devices import DeviceKeyring, Registry, SenderPool
from hub.events import EventLog
from hub.metrics import Metrics
from hub.settings import Settings
from hub.store import Store
from hub.transport import codec
from shared_etp.compat import now_ms
from shared_etp.errors import ProtocolError
from shared_etp.frame import Receiver, derive_key, parse_frame
from shared_etp.schema import (
    BESS_STATUS,
    BID,
    BID_CONFIRM,
    DEVICE_FAILURE,
    QUERY,
    REGISTER,
    TERMINATE,
)

DEVICE = 7
MASTER = b"trade-integrity-trace-master-0123"
HOLD_MS = 300


def _request(msg_type: int, *, hub: bool | None = None) -> Any:
    def matches(msg: dict[str, int], _answers: tuple[int, int] | None) -> bool:
        sent_by_hub = msg["src"] == 0
        return msg["src"] != DEVICE and msg["t"] == msg_type and hub in (None, sent_by_hub)
    return matches


def _answer(to_type: int, *, hub: bool | None = None) -> Any:
    def matches(msg: dict[str, int], answers: tuple[int, int] | None) -> bool:
        return (msg["src"] == DEVICE and answers is not None and answers[0] == to_type
                and hub in (None, answers[1] == 0))
    return matches


# Every step of the flow, each hit once, in this order: (name, which frame, long outage). A
# long outage outlasts the battery's hold (the confirm's copies are all lost, the hold
# expires); a short one does not. The asks (Terminate as the winner) follow from the long cuts
# around the confirm; the tells (Terminate as the hub) from cut queries and bids.
PLAN = [
    ("query", _request(QUERY), False),
    ("query answer", _answer(QUERY), True),
    ("bid", _request(BID), False),
    ("bid answer", _answer(BID), True),
    ("tell", _request(TERMINATE, hub=True), False),
    ("tell answer", _answer(TERMINATE, hub=True), False),
    ("confirm", _request(BID_CONFIRM), True),
    ("ask", _request(TERMINATE, hub=False), False),
    ("confirm answer", _answer(BID_CONFIRM), True),
    ("ask answer", _answer(TERMINATE, hub=False), False),
    ("confirm, short", _request(BID_CONFIRM), False),
    ("confirm answer, short", _answer(BID_CONFIRM), False),
]


class LinkDown(ConnectionError):
    """Stand-in for the MQTT link's error while it is down (publish raises)."""


class Rig:
    """One battery and the link to it; cuts the link at the planned step of each auction."""

    def __init__(self, flash: Path, kind: str) -> None:
        self.flash = flash
        self.kind = kind  # lose | down | power
        self.battery = SimBattery(capacity_wh=200_000, soc=9000)
        self.epoch = now_ms() // 1000
        self.core = self._boot()
        self.driver: AuctionDriver | None = None
        self.registry: Registry | None = None
        self.receiver = Receiver(DeviceKeyring(MASTER), max_senders=4)
        self.until = 0.0  # loop time the current outage ends
        self.asked: dict[int, tuple[int, int]] = {}  # auction -> (type, src) of the last request
        self.order: list[int] = []  # auctions in the order they started
        self.faults = 0
        self.reboots = 0
        self.order_at_last_cut = 0
        self.hit: list[str] = []  # the steps of PLAN hit so far

    def _boot(self) -> NodeCore:
        self.epoch += 1
        config = {
            "device_id": DEVICE, "site": "site1", "key": derive_key(MASTER, DEVICE),
            "notice_key": derive_key(MASTER, 0), "reserve_mc": 20_000, "pct_for_sale": 8000,
            "dynamic_reserve": False, "hold_timeout_ms": HOLD_MS, "min_reputation": 0,
            "status_interval_ms": 200, "floor_wh": 500, "delivery_s": 36_000,
            "epoch": self.epoch,
        }
        return NodeCore(config, self.battery, AuditLog(str(self.flash)))

    # ---- the cut -----------------------------------------------------------------------

    def out(self) -> bool:
        return asyncio.get_running_loop().time() < self.until

    def link_up(self) -> bool:
        return not (self.kind == "down" and self.out())

    def _step(self, frame: bytes) -> None:
        """Follow each auction's frames; the next step of PLAN is hit at the first frame that
        matches it (after the previous outage ended)."""
        msg, _, _ = parse_frame(frame)
        auction = msg.get("auc")
        if auction is None or self.out():
            return
        from_battery = msg["src"] == DEVICE
        answers = self.asked.get(auction) if from_battery else None
        if not from_battery:
            self.asked[auction] = (msg["t"], msg["src"])
        if auction not in self.order:
            self.order.append(auction)
        if len(self.hit) < len(PLAN):
            name, matches, long = PLAN[len(self.hit)]
            if matches(msg, answers):
                self.hit.append(name)
                self._cut(long=long)

    def _cut(self, *, long: bool) -> None:
        self.faults += 1
        self.order_at_last_cut = len(self.order)
        length = (2 * HOLD_MS if long else HOLD_MS // 3) / 1000.0
        self.until = asyncio.get_running_loop().time() + length
        if self.kind == "power":
            self._to_hub(self.core.will())  # the broker publishes its will
            asyncio.get_running_loop().call_later(length, self._reboot)

    def _reboot(self) -> None:
        self.reboots += 1
        self.core = self._boot()
        self._to_hub(self.core.birth())

    # ---- hub -> battery ------------------------------------------------------------------

    def publish(self, topic: str, frame: bytes, qos: int = 0, retain: bool = False) -> None:
        if "/bess/" not in topic:
            return  # market notices
        if not self.link_up():
            raise LinkDown("link down")
        self._step(frame)
        if not self.out():
            asyncio.get_running_loop().call_soon(self._at_battery, topic, frame)

    def _at_battery(self, topic: str, frame: bytes) -> None:
        if self.out():
            return  # lost on the way
        for reply in self.core.handle(topic, frame):
            self._to_hub(reply)

    # ---- battery -> hub ------------------------------------------------------------------

    def _to_hub(self, out: tuple[str, bytes]) -> None:
        topic, frame = out
        if topic.endswith("/resp"):
            self._step(frame)
        if self.out() and not topic.endswith("/death"):
            return
        asyncio.get_running_loop().call_soon(self._at_hub, topic, frame)

    def _at_hub(self, topic: str, frame: bytes) -> None:
        assert self.driver is not None and self.registry is not None
        try:
            msg = self.receiver.open(frame) if not topic.endswith(("/birth", "/death")) else (
                parse_frame(frame)[0])
        except ProtocolError:
            return
        if msg["t"] == REGISTER:
            self.registry.on_register(codec.birth(msg))
        elif msg["t"] == DEVICE_FAILURE:
            self.registry.on_failure_frame(codec.failure_notice(msg))
        elif msg["t"] == BESS_STATUS:
            self.registry.on_state(codec.battery_state(msg))
        else:
            self.registry.seen(DEVICE, msg["ts"])
            self.driver.on_response(DEVICE, msg)

    async def tick(self) -> None:
        """The board's 100 ms loop (faster here): hold expiry, status."""
        while True:
            await asyncio.sleep(0.02)
            if self.kind == "power" and self.out():
                continue  # no power, no loop
            for out in self.core.tick():
                self._to_hub(out)


async def trade_through_faults(tmp_path: Path, kind: str) -> dict[str, Any]:
    settings = Settings(
        data_dir=tmp_path, response_timeout_ms=60, hold_timeout_ms=HOLD_MS,
        auction_interval_ms=10, round_ms=5, lot_wh=1000, notice_interval_ms=100_000,
        trading_period_ms=0,
    )
    config = dataclasses.replace(
        AuctionConfig.from_settings(settings), ask_wait_ms=150, ask_backoff_max_ms=600
    )
    rig = Rig(tmp_path / "flash", kind)
    async with Store(settings.resolved_database_url()) as store:
        events = EventLog(store)
        await events.start()
        registry = Registry(200, 3.0, lambda *args: driver.on_device_failure(*args))
        driver = AuctionDriver(
            config,
            link=rig,
            registry=registry,
            senders=SenderPool(DeviceKeyring(MASTER), now_ms() // 1000),
            notice_key=derive_key(MASTER, 0),
            store=store,
            metrics=Metrics(),
            events=events,
            buyers=Buyers([Aggregator(c) for c in default_aggregators(3, seed=4)]),
            link_up=rig.link_up,
        )
        rig.driver, rig.registry = driver, registry
        ticker = asyncio.create_task(rig.tick())
        rig._to_hub(rig.core.birth())
        await driver.start()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        # every step hit, a few clean auctions after, and the battery's word on every trade
        while not (
            len(rig.hit) == len(PLAN) and len(rig.order) > rig.order_at_last_cut + 3
            and not driver.reconciler.unverified
        ):
            assert loop.time() < deadline, (
                f"stuck: {len(rig.order)} auctions, {len(driver.reconciler.unverified)} unverified"
            )
            await asyncio.sleep(0.05)
        await driver.stop()
        ticker.cancel()
        await events.stop()
        trades = await store.list_trades()
        settlements = await store.list_settlements()
        totals = driver.totals
    records, torn = read_all(str(tmp_path / "flash"))
    return {
        "rig": rig, "trades": trades, "settlements": settlements, "totals": totals,
        "records": records, "torn": torn,
    }


@pytest.mark.parametrize("kind", ["lose", "down", "power"])
async def test_link_loss_at_every_step_counts_exactly_the_trades_the_battery_committed(
    tmp_path: Path, kind: str
) -> None:
    run = await trade_through_faults(tmp_path, kind)
    rig = run["rig"]
    assert rig.hit == [name for name, _matches, _long in PLAN]  # every step was hit
    if kind == "power":
        assert rig.reboots == len(PLAN)
    committed = {
        r["auc"]: (r["b"], r["p"], r["e"]) for r in run["records"] if r.get("k") == "trade"
    }
    counted = {
        t.auction_id: (t.bidder_id, t.price_mc, t.energy_wh)
        for t in run["trades"] if t.status == "verified"
    }
    assert counted == committed  # none invented, none lost, same winner, price and energy
    assert len(committed) >= 3  # trades happened (fewer on a busy machine: auctions time out)
    undecided = [t for t in run["trades"] if t.status in ("recorded", "unverified")]
    assert undecided == []
    verified_ids = {t.id for t in run["trades"] if t.status == "verified"}
    assert {s.trade_id for s in run["settlements"]} == verified_ids  # only proven trades settle
    totals = run["totals"]
    assert totals.trades == len(committed) and totals.trades_unverified == 0
    assert totals.revenue_mc == sum(p * e // 1000 for _b, p, e in committed.values())
