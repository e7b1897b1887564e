"""The fault rig: every fault while trading, with real parts, and the store checked against the
batteries' own audit trails.

Mosquitto on a loopback port, `etp hub` as a child process (SQLite in a temporary data dir) and
the REAL firmware on the MicroPython unix port (one process per board, its flash a directory).
A bounded schedule, each fault only once trading is going: the hub killed with SIGKILL and
restarted, the broker stopped for a few seconds and restarted on the same port (once while the
hub is stopped too, both then brought back), boards power-cut (SIGKILL, mostly while they hold
a bid, i.e. in the middle of an auction) and powered on again from the same flash. Then the hub
runs until it has no unverified trade left, and the store must hold exactly the trades the
boards committed on flash: none invented, none lost, none twice, same bidder, price and energy,
none left undecided; and the hub's log holds no traceback.

Figures (printed, and written to <data dir>/fault_rig.json): trades in the store and on the
boards, faults of each kind, and per fault the time from its end (hub ready, broker listening,
board process started) to
- the site's next trade: the first `trade` record in any board's audit trail after it (the
  hub's event log cannot tell: a kill -9 loses its last unflushed events);
- for a power cut, that board's next trade, from its own trail;
- the first rise of `/api/v1/status` market.trades (polled every ~50 ms; it restarts from 0
  with the hub, and it also rises when an older trade is verified by asking its battery).

The aggregators want more than the boards can sell (ETP_AGGREGATOR_DEMAND_SCALE, 20 here): with
the default demand they pace their buying across the trading period, and the site then pauses
for seconds with no fault at all, which would be measured as recovery.

ETP_FAULT_RIG_ROUNDS (default 1) repeats the schedule for a longer run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from firmware.etp_node.audit_dump import parse_log
from hub.settings import load_master_secret
from hub.store import Store, database_url_for
from hub.store.models import TradeRow
from hub.tools.firmware.audit import AuditReport, read_audit_dir, trail_names
from hub.tools.firmware.fleet import Fleet, FleetConfig, start_board, start_fleet
from tests.brokers import MosquittoProcess, mosquitto_available
from tests.conftest import micropython_available
from tests.hub.processes import HubProcess

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto, pytest.mark.micropython]

BOARDS = 5
BOARD_HEAP = "64K"  # the boards' real heap
AUDIT_FILES = 16  # 16 x 16 KB of trail per board: nothing rotates away during the run
OUTAGE_S = 3.0  # a broker outage
POWER_OFF_S = 0.5  # a board stays off this long
# aggregators want more than the boards offer: trading pauses only for faults, not for pacing
DEMAND_SCALE = os.environ.get("ETP_FAULT_RIG_DEMAND_SCALE", "20")
ROUNDS = int(os.environ.get("ETP_FAULT_RIG_ROUNDS", "1"))

# One round of the schedule: 3 hub kills, 3 broker outages (one with the hub stopped), 4 cuts.
SCHEDULE = (
    "board_cut", "hub_kill", "broker_outage", "board_cut", "hub_kill",
    "broker_and_hub_outage", "board_cut", "hub_kill", "broker_outage", "board_cut",
)

# events that tell what became of a trade after its confirm -> their name in the figures
DECIDING_EVENTS = {
    "trade_unverified": "unverified_at_close",
    "auction_recovered": "unverified_at_restart",
    "trade_verified": "verified_by_asking",
    "trade_void": "void",
    "trade_unresolvable": "unresolvable",
}

Terms = tuple[int, int, int, int]  # device, bidder, price mc/kWh, energy Wh


@dataclass
class Fault:
    """One fault injected: what, when (wall clock, s), and what it hit."""

    kind: str
    started: float
    ended: float = 0.0
    device_id: int | None = None
    mid_auction: bool = False  # a board cut while it held a bid, else auctions open at the fault
    status_trades_s: float | None = None  # to the first rise of the hub's market.trades
    site_next_trade_s: float | None = None  # to the next trade committed on any board
    board_next_trade_s: float | None = None  # power cut: to that board's next trade


class Rig:
    """The running parts and the faults injected into them."""

    def __init__(self, broker: MosquittoProcess, hub: HubProcess, fleet: Fleet) -> None:
        self.broker = broker
        self.hub = hub
        self.fleet = fleet
        self.faults: list[Fault] = []
        self._cuts = 0

    async def trading(self, since: float, trades: int = 3, timeout_s: float = 40.0) -> float:
        """Wait until the boards committed `trades` trades after `since` (wall clock, s) and
        the hub counts more than it did; returns the time its count first rose. (The hub's
        count alone can rise without trading: trades verified by asking after a restart.)"""
        base = int((await asyncio.to_thread(self.hub.market)).get("trades", 0))
        deadline = time.monotonic() + timeout_s
        first_rise: float | None = None
        while True:
            count = int((await asyncio.to_thread(self.hub.market)).get("trades", 0))
            if count > base and first_rise is None:
                first_rise = time.time()
            if first_rise is not None:
                committed = sum(await asyncio.to_thread(
                    lambda: [_trades_since(b.flash_dir, since) for b in self.fleet.devices]
                ))
                if committed >= trades:
                    return first_rise
            if time.monotonic() > deadline:
                raise AssertionError(f"no trading within {timeout_s} s (hub trades {count})")
            await asyncio.sleep(0.05)

    async def inject(self, kind: str) -> Fault:
        """Inject one fault of `kind`, bring the system back and wait until it trades again;
        returns its record."""
        fault = await getattr(self, kind)()
        fault.ended = time.time()
        self.faults.append(fault)
        fault.status_trades_s = round(await self.trading(fault.ended) - fault.ended, 3)
        return fault

    async def _auctions_open(self) -> bool:
        return int((await asyncio.to_thread(self.hub.market)).get("auctions_open", 0)) >= 1

    async def hub_kill(self) -> Fault:
        """kill -9 the hub while auctions are open, restart it."""
        market = await self.hub.wait_market(
            lambda m: int(m.get("auctions_open", 0)) >= 1, 10, "open auctions"
        )
        fault = Fault("hub_kill", time.time(), mid_auction=market.get("auctions_open", 0) >= 1)
        await self.hub.kill(signal.SIGKILL)
        assert self.hub.proc is not None and self.hub.proc.returncode == -signal.SIGKILL
        await self.hub.start()
        return fault

    async def broker_outage(self) -> Fault:
        """Stop the broker for OUTAGE_S, start it again on the same port."""
        fault = Fault("broker_outage", time.time(), mid_auction=await self._auctions_open())
        self.broker.stop()
        await asyncio.sleep(OUTAGE_S)
        await self.broker.start()
        return fault

    async def broker_and_hub_outage(self) -> Fault:
        """Stop the broker; stop the hub (SIGINT) while the broker is down; start the hub
        first (it serves HTTP and keeps connecting), then the broker; wait until it is ready."""
        fault = Fault("broker_and_hub_outage", time.time(),
                      mid_auction=await self._auctions_open())
        self.broker.stop()
        await asyncio.sleep(OUTAGE_S / 3)
        await self.hub.kill(signal.SIGINT)
        assert self.hub.proc is not None and self.hub.proc.returncode == 0, (
            "the hub did not stop cleanly without its broker"
        )
        await asyncio.sleep(OUTAGE_S / 3)
        self.hub.spawn()
        await asyncio.sleep(OUTAGE_S / 3)
        await self.broker.start()
        await self.hub.wait_ready()
        return fault

    async def board_cut(self) -> Fault:
        """Power-cut a board (SIGKILL), preferably while it holds a bid; power it on again
        from the same flash after POWER_OFF_S."""
        index = self._cuts % len(self.fleet.devices)
        self._cuts += 1
        board = self.fleet.devices[index]
        mid_auction = await _wait_holding(board.flash_dir, timeout_s=8.0)
        fault = Fault("board_cut", time.time(), device_id=board.device_id,
                      mid_auction=mid_auction)
        await self.fleet.kill(board.device_id)
        await asyncio.sleep(POWER_OFF_S)
        self.fleet.devices[index] = await start_board(
            board.flash_dir, board.device_id, BOARD_HEAP, ptys=False
        )
        return fault


def _holds(tail: bytes) -> set[int]:
    """Auctions in which the trail's tail shows an accepted bid not yet traded, expired or
    terminated: the board holds energy for them."""
    held: set[int] = set()
    records, _ = parse_log(tail)
    for record in sorted(records, key=lambda r: r["n"]):
        kind, auction = record.get("k"), record.get("auc")
        if kind == "bid" and record.get("r") == 0:
            held.add(auction)
        elif kind in ("trade", "expire", "terminate"):
            held.discard(auction)
    return held


async def _wait_holding(flash: Path, timeout_s: float) -> bool:
    """Poll the tails of the newest audit file and trade segment (trades have their own ring)
    until the board holds a bid (True) or timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            names = trail_names([p.name for p in (flash / "audit").iterdir()])
        except OSError:
            names = []
        trades = [name for name in names if name.startswith("trade.")]
        tail = b""
        for name in ["audit.0", *trades[-1:]]:
            try:
                with open(flash / "audit" / name, "rb") as trail:
                    trail.seek(max(0, trail.seek(0, os.SEEK_END) - 2048))
                    tail += trail.read()  # a line cut by the seek fails its checksum
            except OSError:
                pass
        if _holds(tail):
            return True
        await asyncio.sleep(0.01)
    return False


def _trades_since(flash: Path, since: float) -> int:
    """Trades the board committed at or after `since` (wall clock, s), from its trade ring's
    newest two segments (enough for the few seconds between faults)."""
    count = 0
    names = trail_names([p.name for p in (flash / "audit").iterdir()])
    for name in [name for name in names if name.startswith("trade.")][-2:]:
        try:
            records, _ = parse_log((flash / "audit" / name).read_bytes())
        except OSError:
            continue
        count += sum(1 for r in records if r.get("k") == "trade" and r["t"] >= since * 1000)
    return count


def _read_trail(flash: Path) -> AuditReport:
    """The board's audit trail; fails if rotation dropped its oldest records (a trade the
    store holds would then look invented)."""
    report = read_audit_dir(flash / "audit", files=AUDIT_FILES)
    assert report.records and report.records[0]["n"] == 0, f"{flash}: its trail rotated"
    return report


async def _read_store(data_dir: Path) -> tuple[list[TradeRow], Counter[str]]:
    """Every trade in the store, and how many trades the hub's event log shows deciding
    after the confirm (a lower bound: a kill -9 loses the events not yet written)."""
    store = Store(database_url_for(data_dir))
    await store.start()
    try:
        trades = await store.list_trades()
        decided: Counter[str] = Counter()
        after = 0
        while page := await store.list_events(after, limit=500, kinds=list(DECIDING_EVENTS)):
            after = page[-1].seq
            for event in page:
                if event.kind == "trade_verified" and event.payload.get("source") != "asked":
                    continue
                if event.kind == "auction_recovered" and event.payload.get("outcome") != (
                    "unverified"
                ):
                    continue
                decided[DECIDING_EVENTS[event.kind]] += 1
    finally:
        await store.close()
    return trades, decided


def _next_after(moments_ms: list[int], since_s: float) -> float | None:
    """Seconds from `since_s` to the first moment (ms) at or after it, None if none."""
    later = [m for m in moments_ms if m >= since_s * 1000]
    return round((min(later) - since_s * 1000) / 1000, 3) if later else None


def _figures(faults: list[Fault], elapsed_s: float, trades: list[TradeRow],
             committed: dict[int, Terms], checks: dict[str, int]) -> dict[str, Any]:
    statuses = Counter(t.status for t in trades)
    by_kind: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(f.kind for f in faults):
        of_kind = [f for f in faults if f.kind == kind]
        row: dict[str, Any] = {
            "count": len(of_kind), "mid_auction": sum(f.mid_auction for f in of_kind)
        }
        for figure in ("site_next_trade_s", "board_next_trade_s", "status_trades_s"):
            values = [getattr(f, figure) for f in of_kind if getattr(f, figure) is not None]
            if values:
                row[figure] = {"median": round(statistics.median(values), 3),
                               "max": max(values)}
        by_kind[kind] = row
    return {
        "boards": BOARDS,
        "board_heap": BOARD_HEAP,
        "rounds": ROUNDS,
        "elapsed_s": round(elapsed_s, 1),
        "trades": {
            "store_verified": statuses["verified"],
            "store_void": statuses["void"],
            "store_undecided": statuses["recorded"] + statuses["unverified"],
            "boards_committed": len(committed),
        },
        "checks": checks,
        "faults": by_kind,
        "fault_log": [asdict(f) for f in faults],
    }


def _print_figures(figures: dict[str, Any]) -> None:
    trades, checks = figures["trades"], figures["checks"]
    print(
        f"\nfault rig: {figures['boards']} boards at {figures['board_heap']}, "
        f"{figures['rounds']} round(s), {figures['elapsed_s']} s | trades: store verified "
        f"{trades['store_verified']}, boards committed {trades['boards_committed']}, void "
        f"{trades['store_void']}, undecided {trades['store_undecided']} | "
        + ", ".join(f"{name} {value}" for name, value in checks.items())
    )
    print("after the confirm (hub events, at least): " + ", ".join(
        f"{name} {value}" for name, value in figures["hub_events"].items()
    ) + f" | torn audit lines {figures['torn_audit_lines']}")
    columns = ("site_next_trade_s", "board_next_trade_s", "status_trades_s")
    print(f"{'fault':<22}{'n':>3}{'mid':>5}" + "".join(f"{c + ' med/max':>28}" for c in columns))
    for kind, row in figures["faults"].items():
        cells = [f"{row[c]['median']}/{row[c]['max']}" if c in row else "-" for c in columns]
        print(f"{kind:<22}{row['count']:>3}{row['mid_auction']:>5}"
              + "".join(f"{cell:>28}" for cell in cells))


async def test_fault_rig_store_matches_the_boards_audit_trails(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (the broker must be stopped and restarted)")
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    broker = MosquittoProcess(tmp_path)
    hub = HubProcess(data_dir, broker.url, ETP_AUCTION_INTERVAL_MS="200", ETP_ROUND_MS="40",
                     ETP_AGGREGATOR_DEMAND_SCALE=DEMAND_SCALE)
    began = time.monotonic()
    await broker.start()
    fleet: Fleet | None = None
    try:
        await hub.start()
        fleet = await start_fleet(FleetConfig(
            count=BOARDS, mqtt_url=broker.url, site="site1",
            master_secret=load_master_secret(data_dir / "master.key"),
            data_dir=tmp_path / "boards", ptys=False, heap=BOARD_HEAP,
            # energy that lasts the run: large packs, lots delivered slowly
            overrides={"delivery_s": 36000, "capacity_wh": 1_000_000,
                       "audit_files": AUDIT_FILES},
        ))
        rig = Rig(broker, hub, fleet)
        await rig.trading(time.time() - 60)
        for kind in SCHEDULE * ROUNDS:
            await rig.inject(kind)  # each waits for trading before the next
        await hub.wait_market(lambda m: m.get("trades_unverified") == 0, 60,
                              "no unverified trade left")
        await hub.kill(signal.SIGINT)
        assert hub.proc is not None and hub.proc.returncode == 0
    finally:
        await hub.kill(signal.SIGKILL)
        if fleet is not None:
            await fleet.stop()
        broker.stop()
    elapsed_s = time.monotonic() - began
    assert fleet is not None

    trades, decided = await _read_store(data_dir)
    committed: dict[int, Terms] = {}
    doubled_on_boards = torn = 0
    trade_moments: dict[int, list[int]] = {}
    for board in fleet.devices:
        trail = _read_trail(board.flash_dir)
        torn += trail.torn
        records = [r for r in trail.records if r.get("k") == "trade"]
        trade_moments[board.device_id] = [int(r["t"]) for r in records]
        for record in records:
            doubled_on_boards += record["auc"] in committed
            committed[record["auc"]] = (board.device_id, record["b"], record["p"], record["e"])
    verified = {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
                for t in trades if t.status == "verified"}
    per_auction = Counter(t.auction_id for t in trades)
    checks = {
        "phantom": len(set(verified) - set(committed)),
        "lost": len(set(committed) - set(verified)),
        "doubled": doubled_on_boards + sum(n - 1 for n in per_auction.values()),
        "mismatched": sum(1 for auc in set(verified) & set(committed)
                          if verified[auc] != committed[auc]),
        "undecided": sum(1 for t in trades if t.status in ("recorded", "unverified")),
    }
    on_site = sorted(moment for moments in trade_moments.values() for moment in moments)
    for fault in rig.faults:
        fault.site_next_trade_s = _next_after(on_site, fault.ended)
        if fault.device_id is not None:
            fault.board_next_trade_s = _next_after(trade_moments[fault.device_id], fault.ended)
    figures = _figures(rig.faults, elapsed_s, trades, committed, checks)
    figures["hub_events"] = {name: decided[name] for name in DECIDING_EVENTS.values()}
    figures["torn_audit_lines"] = torn
    (data_dir / "fault_rig.json").write_text(json.dumps(figures, indent=2))
    _print_figures(figures)

    log = hub.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    plain_outages = sum(1 for f in rig.faults if f.kind == "broker_outage")
    assert log.count("mqtt connection lost") >= plain_outages, log[-5000:]  # one line each
    assert len(committed) >= 30  # the rig traded throughout
    assert sum(f.mid_auction for f in rig.faults if f.kind == "board_cut") >= 2
    assert checks == {"phantom": 0, "lost": 0, "doubled": 0, "mismatched": 0,
                      "undecided": 0}, (checks, figures["trades"])
    assert all(f.site_next_trade_s is not None for f in rig.faults), figures["fault_log"]
