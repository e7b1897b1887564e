"""The reconciler: what a battery says about an auction decides its unverified trade.

Real store (SQLite), event log, registry and records; the battery is a stand-in that answers
each Terminate as the test scripts it (the firmware's own answers are tested in tests/firmware
and end to end in test_trade_integrity.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from hub.auctions.messages import TradeTerms
from hub.auctions.reconcile import Reconciler
from hub.auctions.records import AuctionRecords
from hub.devices import Registry
from hub.events import EventKind, EventLog
from hub.metrics import Metrics
from hub.store import Store, database_url_for
from hub.transport.codec import Birth
from shared_etp.compat import now_ms
from shared_etp.schema import (
    BID_ACCEPT,
    BID_REJECT,
    REASON_AUCTION_CLOSED,
    REASON_HOLD_EXPIRED,
    REASON_UNKNOWN_AUCTION,
)

BIDDER = 100_001
TERMS = TradeTerms(BIDDER, 25_000, 800, 20_000)


class Battery:
    """Stand-in for a board's answers to Terminate: `answer(device, auction)` is a dict of the
    reply's fields, or None for silence. Records every Terminate it was sent."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[tuple[int, int, int, int]] = []  # (sender, device, term, auction)
        self.reconciler: Reconciler | None = None

    def send(self, src: int, device_id: int, term: int, auction_id: int) -> tuple[int, bytes]:
        self.sent.append((src, device_id, term, auction_id))
        msg_id = len(self.sent)
        reply = self.answer(device_id, auction_id)
        if reply is not None:
            assert self.reconciler is not None
            msg = {"dst": src, "id": msg_id, "auc": auction_id, **reply}
            answer = b"answer-%d" % msg_id  # stands for the board's signed frame
            asyncio.get_running_loop().call_soon(
                self.reconciler.on_answer, device_id, msg, answer
            )
        return msg_id, b"terminate-%d" % msg_id


async def _unverified_trade(store: Store, device_id: int) -> tuple[int, int]:
    auction_id = await store.open_auction(
        device_id=device_id, site="site1", mechanism="ascending", lot_wh=800,
        reserve_mc=20_000, opened_ms=1,
    )
    trade, _ = await store.record_trade(
        auction_id=auction_id, device_id=device_id, bidder_id=BIDDER, price_mc=25_000,
        energy_wh=800, reserve_mc=20_000, confirmed_ms=2,
    )
    await store.close_auction(
        auction_id, status="cleared", clearing_price_mc=25_000, winner_id=BIDDER,
        energy_wh=800, closed_ms=3, trade_status="unverified",
    )
    return auction_id, trade.id


async def _rig(tmp_path: Path, battery: Battery, devices: int = 4) -> tuple[Any, ...]:
    store = Store(database_url_for(tmp_path))
    await store.start()
    events = EventLog(store)
    await events.start()
    records = AuctionRecords(store, Metrics(), events)
    registry = Registry(1000, 3.0, lambda *_: None)
    for device_id in range(1, devices + 1):
        registry.on_register(Birth(
            device_id=device_id, sent_ms=now_ms(), energy_total_wh=10_000,
            energy_remaining_wh=9_000, pct_for_sale=8000, reserve_mc=20_000, health=0,
        ))
    reconciler = Reconciler(
        send=battery.send, registry=registry, records=records, wait_ms=50, backoff_max_ms=200
    )
    battery.reconciler = reconciler
    return store, events, records, registry, reconciler


async def _settle(reconciler: Reconciler, rounds: int = 40) -> None:
    for _ in range(rounds):
        reconciler.due()
        await asyncio.sleep(0.02)
    await reconciler.stop()


async def test_the_batterys_answer_decides_each_unverified_trade(tmp_path: Path) -> None:
    answers = {
        1: {"t": BID_ACCEPT, "price": 25_000, "ereq": 800},  # committed as recorded
        2: {"t": BID_REJECT, "reason": REASON_HOLD_EXPIRED},  # never committed
        3: {"t": BID_REJECT, "reason": REASON_UNKNOWN_AUCTION},  # no record left
        4: {"t": BID_ACCEPT, "price": 24_000, "ereq": 800},  # committed other terms
    }
    battery = Battery(lambda device, _auction: answers[device])
    store, events, records, _registry, reconciler = await _rig(tmp_path, battery)
    alerts = events.subscribe([EventKind.TRADE_UNRESOLVABLE, EventKind.TRADE_VERIFIED])
    try:
        trades = {}
        for device_id in answers:
            auction_id, trade_id = await _unverified_trade(store, device_id)
            trades[device_id] = trade_id
            reconciler.ask(device_id, auction_id, trade_id, TERMS)
        await _settle(reconciler)
        status = {t.device_id: t.status for t in await store.list_trades()}
        settled = [row.trade_id for row in await store.pending_settlements()]
    finally:
        await events.stop()
        await store.close()
    assert status == {1: "verified", 2: "void", 3: "unverified", 4: "unverified"}
    assert settled == [trades[1]]  # only the proven trade is settled
    # asked as the recorded winner, once each: an answer ends the questions
    assert sorted(battery.sent) == [(BIDDER, d, REASON_AUCTION_CLOSED, a) for d, a in
                                    sorted((s[1], s[3]) for s in battery.sent)]
    assert len(battery.sent) == 4
    totals = records.totals
    assert (totals.trades, totals.trades_voided, totals.trades_unverified) == (1, 1, 2)
    assert totals.revenue_mc == 25_000 * 800 // 1000
    assert totals.trades_unresolvable == 2
    problems = sorted(problem for _q, problem in reconciler.unresolvable)
    assert problems == ["battery committed other terms", "battery has no record of the auction"]
    seen = []
    while (event := alerts.get_nowait()) is not None:
        seen.append(event.kind)
    assert sorted(seen) == sorted([EventKind.TRADE_VERIFIED] + [EventKind.TRADE_UNRESOLVABLE] * 2)


async def test_a_silent_or_absent_battery_is_asked_again_until_it_answers(tmp_path: Path) -> None:
    """Silent: re-asked with growing waits. Offline: not asked; asked at once when back."""
    state = {"answering": False}

    def answer(_device: int, _auction: int) -> dict[str, int] | None:
        if not state["answering"]:
            return None
        return {"t": BID_ACCEPT, "price": 25_000, "ereq": 800}

    battery = Battery(answer)
    store, events, _records, registry, reconciler = await _rig(tmp_path, battery, devices=2)
    try:
        silent = await _unverified_trade(store, 1)
        away = await _unverified_trade(store, 2)
        registry.devices[2].online = False  # its will came: offline, not seen lately
        registry.devices[2].last_seen_ticks = 0
        reconciler.ask(1, silent[0], silent[1], TERMS)
        reconciler.ask(2, away[0], away[1], TERMS)
        for _ in range(25):  # 0.5 s: waits of 50, 100, 200, 200 ms
            reconciler.due()
            await asyncio.sleep(0.02)
        to_silent = [s for s in battery.sent if s[1] == 1]
        to_away = [s for s in battery.sent if s[1] == 2]
        assert 3 <= len(to_silent) <= 6  # re-asked, backing off (not every 20 ms tick)
        assert len(to_away) == 1  # only the first try, when it was asked; then it waits
        state["answering"] = True
        registry.devices[2].online = True  # back (its birth)
        reconciler.due()
        await asyncio.sleep(0.02)
        assert len([s for s in battery.sent if s[1] == 2]) == 2  # at once, not after a back-off
        await _settle(reconciler, rounds=15)
        assert {t.status for t in await store.list_trades()} == {"verified"}
        assert reconciler.questions == {}
    finally:
        await events.stop()
        await store.close()


async def test_a_tell_is_resent_until_the_battery_answers_anything(tmp_path: Path) -> None:
    calls = {"n": 0}

    def answer(_device: int, _auction: int) -> dict[str, int] | None:
        calls["n"] += 1
        return None if calls["n"] < 3 else {"t": BID_REJECT, "reason": REASON_AUCTION_CLOSED}

    battery = Battery(answer)
    store, events, records, _registry, reconciler = await _rig(tmp_path, battery, devices=1)
    try:
        reconciler.tell(1, 42, REASON_AUCTION_CLOSED)
        await _settle(reconciler)
    finally:
        await events.stop()
        await store.close()
    assert [s[0] for s in battery.sent] == [0, 0, 0]  # sent as the hub, until answered
    assert reconciler.questions == {}
    assert records.totals.trades_unverified == 0
