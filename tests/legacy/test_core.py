"""The bridge's battery logic without sockets: the firmware core over the legacy battery's
reported figures, with its own budget (the prototype would accept every bid)."""

from __future__ import annotations

from typing import Any

from hub.legacy.core import BridgeCore
from hub.legacy.double import DoubleConfig, LegacyBatteryDouble
from hub.legacy.pack import LegacyPack
from shared_etp.frame import Keyring, Receiver, Sender, derive_key
from shared_etp.schema import (
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    BID_REJECT,
    QUERY,
    REASON_INSUFFICIENT_ENERGY,
)

MASTER = b"legacy-core-test-master-secret-0123"
DEVICE = 60001
BIDDER = 100001


def _setup() -> tuple[BridgeCore, Sender, Receiver, LegacyBatteryDouble]:
    key = derive_key(MASTER, DEVICE)
    double = LegacyBatteryDouble(DoubleConfig(remaining_wh=4000, pct_for_sale=5000))
    pack = LegacyPack()
    config: dict[str, Any] = {
        "device_id": DEVICE,
        "site": "site1",
        "key": key,
        "reserve_mc": 0,
        "pct_for_sale": 0,
        "dynamic_reserve": False,
        "min_reputation": 0,
    }
    core = BridgeCore(config, pack)
    pack.link_up = True
    pack.update(double.answer({"t": QUERY, "id": 1}) or {})  # the battery's offer: 2000 Wh
    core.sync_offer()
    keyring = Keyring()
    keyring.add(DEVICE, key)
    return core, Sender(BIDDER, DEVICE, key, 1), Receiver(keyring), double


def _send(
    core: BridgeCore, sender: Sender, receiver: Receiver, msg_type: int, **fields: int
) -> list[dict[str, Any]]:
    frame, _msg = sender.frame(msg_type, dst=DEVICE, **fields)
    return [receiver.open(out) for _topic, out in core.handle(core.topic_req, frame)]


def test_lots_beyond_the_offer_are_refused_though_the_battery_would_accept() -> None:
    core, bidder, hub, double = _setup()
    assert core.max_sellable_wh() == 2000  # 4000 Wh remaining x 50 % for sale
    # the prototype itself would take a 3 kWh lot at its reserve ...
    assert (double.answer({"t": BID, "id": 2, "price": 20000, "ereq": 3000}) or {})["t"] == (
        BID_ACCEPT
    )
    # ... the bridge refuses it, and holds what fits
    [reply] = _send(core, bidder, hub, BID, auc=1, price=20000, ereq=3000)
    assert reply["t"] == BID_REJECT and reply["reason"] == REASON_INSUFFICIENT_ENERGY
    [reply] = _send(core, bidder, hub, BID, auc=2, price=20000, ereq=1500)
    assert reply["t"] == BID_ACCEPT
    [reply] = _send(core, bidder, hub, BID, auc=3, price=20000, ereq=600)
    assert reply["reason"] == REASON_INSUFFICIENT_ENERGY  # 500 Wh left beside the hold


def test_a_confirm_waits_for_the_legacy_commit_then_counts() -> None:
    core, bidder, hub, _double = _setup()
    _send(core, bidder, hub, BID, auc=5, price=21000, ereq=1500)
    assert _send(core, bidder, hub, BID_CONFIRM, auc=5, price=21000, ereq=1500) == []
    [parked] = core.pending_confirms  # the bridge commits it on the legacy battery first
    assert core.stats["trades"] == 0 and core.ledger.holds  # still held meanwhile
    _topic, frame = core.finish_confirm(parked)
    reply = hub.open(frame)
    assert reply["t"] == BID_ACCEPT and reply["ereq"] == 1500
    assert core.max_sellable_wh() == 500 and core.pack.sold_wh == 1500
    # a later report of the untouched battery (the prototype may not count its sales) does
    # not give the energy back
    core.pack.update(
        {
            "t": 2,
            "etot": 10000,
            "pct": 5000,
            "sale": 20000,
            "erem": 4000,
            "health": 0,
            "volt": 48000,
            "dis": 0,
        }
    )
    assert core.max_sellable_wh() == 500


def test_a_confirm_the_legacy_battery_refused_is_rejected_and_released() -> None:
    core, bidder, hub, _double = _setup()
    _send(core, bidder, hub, BID, auc=9, price=21000, ereq=1000)
    _send(core, bidder, hub, BID_CONFIRM, auc=9, price=21000, ereq=1000)
    parked = core.pending_confirms.pop()
    reply = hub.open(core.refuse_confirm(parked, 1)[1])
    assert reply["t"] == BID_REJECT and not core.ledger.holds
    assert core.max_sellable_wh() == 2000 and core.stats["trades"] == 0
