"""A Terminate with `auc` asks the battery "did you commit this auction to me?" (CPython core).

Each answer the node can give, from each of its memories: a live hold, the ring of recent
releases, the audit trail on flash (after the ring forgot, after a reboot), and no record at
all; plus what the question relies on: no trade without its record, no second hold in an
auction that traded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from firmware.etp_node.audit import AuditLog, encode_record
from firmware.etp_node.audit_dump import read_all
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import schema as S
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key

MASTER = b"terminate-ask-master-secret-01"
DEV = 7
KEY = derive_key(MASTER, DEV)
KEYS = Keyring()
KEYS.add(DEV, KEY)
A, B = 1001, 1002  # two aggregators


class Clock:
    """Settable ms clock shared by the node and its peers."""

    def __init__(self) -> None:
        self.now = 1_795_600_000_000

    def __call__(self) -> int:
        return self.now


class Site:
    """One node (device 7: 4500 Wh for sale at a 20000 mc reserve) and signers for its peers."""

    def __init__(self, tmp: Path | None, audit: Any = "flash", epoch: int = 1000,
                 clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.battery = SimBattery(capacity_wh=10000, soc=10000)
        if audit == "flash":
            assert tmp is not None
            audit = AuditLog(str(tmp / "audit"), 16384, 4)
        self.audit = audit
        self.core = NodeCore({
            "device_id": DEV, "site": "s1", "key": KEY, "reserve_mc": 20000,
            "pct_for_sale": 5000, "floor_wh": 500, "dynamic_reserve": False,
            "hold_timeout_ms": 3000, "min_reputation": 0, "epoch": epoch,
        }, self.battery, audit, self.clock)
        self._senders: dict[int, Sender] = {}

    def send(self, src: int, msg_type: int, **fields: int) -> dict | None:
        """Deliver a request from src; the decoded answer (echoing its id, to src) or None."""
        sender = self._senders.setdefault(src, Sender(src, DEV, KEY, 1, clock=self.clock))
        frame, msg = sender.frame(msg_type, dst=DEV, **fields)
        replies = self.core.handle(self.core.topic_req, frame)
        if not replies:
            return None
        (topic, reply_frame), = replies
        reply = decode_frame(reply_frame, KEYS)
        assert topic == self.core.topic_resp
        assert reply["id"] == msg["id"] and reply["dst"] == src
        return reply

    def trade(self, src: int, auc: int, price: int = 25000, ereq: int = 100) -> None:
        """Bid and confirm: a committed trade."""
        assert self.send(src, S.BID, auc=auc, price=price, ereq=ereq)["t"] == S.BID_ACCEPT
        assert self.send(src, S.BID_CONFIRM, auc=auc, price=price, ereq=ereq)["t"] == S.BID_ACCEPT

    def ask(self, src: int, auc: int) -> dict:
        """Terminate auc as src: the node's answer (there must be one)."""
        answer = self.send(src, S.TERMINATE, auc=auc, term=1)
        assert answer is not None and answer["auc"] == auc
        return answer

    def wait(self, ms: int) -> None:
        self.clock.now += ms
        self.core.tick()


def committed(answer: dict, price: int, ereq: int) -> bool:
    return answer["t"] == S.BID_ACCEPT and answer["price"] == price and answer["ereq"] == ereq


def refused(answer: dict) -> int:
    assert answer["t"] == S.BID_REJECT, answer
    return answer["reason"]


def test_committed_answered_from_the_ring(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.trade(A, 1, 26000, 700)
    remaining = site.battery.remaining_wh()
    assert committed(site.ask(A, 1), 26000, 700)
    assert refused(site.ask(B, 1)) == S.REASON_NOT_HOLDER
    assert refused(site.ask(0, 1)) == S.REASON_NOT_HOLDER  # the hub itself bought nothing
    assert site.battery.remaining_wh() == remaining and site.core.stats["trades"] == 1
    assert site.core.stats["outcomes"] == 3
    assert site.core.stats["rejected"] == 0 and site.core.stats["reject_reasons"] == {}


def test_committed_answered_from_the_trail_once_the_ring_forgot(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.trade(A, 1, 26000, 700)
    for auc in range(2, 12):  # ten later releases: the ring keeps 8
        site.trade(B, auc)
    assert site.core.ledger.find(1) is None
    assert committed(site.ask(A, 1), 26000, 700)
    assert refused(site.ask(B, 1)) == S.REASON_NOT_HOLDER
    assert "firmware.etp_node.audit_read" not in sys.modules  # loaded to read, then dropped


def test_committed_answered_after_a_reboot(tmp_path: Path) -> None:
    before = Site(tmp_path)
    before.trade(A, 1, 26000, 700)
    before.clock.now += 5000
    after = Site(tmp_path, epoch=1001, clock=before.clock)  # a new node on the same flash
    assert after.core.ledger.find(1) is None
    assert committed(after.ask(A, 1), 26000, 700)
    assert after.battery.remaining_wh() == 10000  # (the simulated pack is new) nothing sold
    assert after.core.stats["trades"] == 0
    # the question closed the auction: the rebooted node takes no new bid in it
    assert refused(after.send(A, S.BID, auc=1, price=30000, ereq=100)) == S.REASON_AUCTION_CLOSED


def test_live_hold_is_released_and_not_committed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert site.send(A, S.BID, auc=1, price=25000, ereq=1000)["t"] == S.BID_ACCEPT
    assert refused(site.ask(A, 1)) == S.REASON_AUCTION_CLOSED
    assert not site.core.ledger.holds and site.core.sellable_wh() == 4500
    late = site.send(A, S.BID_CONFIRM, auc=1, price=25000, ereq=1000)
    assert refused(late) == S.REASON_AUCTION_CLOSED
    assert site.battery.remaining_wh() == 10000
    assert refused(site.ask(A, 1)) == S.REASON_AUCTION_CLOSED  # asked again: the same


def test_another_bidders_live_hold_is_not_holder(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.send(A, S.BID, auc=1, price=25000, ereq=1000)
    assert refused(site.ask(B, 1)) == S.REASON_NOT_HOLDER
    assert not site.core.ledger.holds  # released all the same


def test_expired_hold_is_hold_expired_from_ring_and_trail(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.send(A, S.BID, auc=1, price=25000, ereq=1000)
    site.wait(3001)
    assert refused(site.ask(A, 1)) == S.REASON_HOLD_EXPIRED
    assert refused(site.ask(B, 1)) == S.REASON_NOT_HOLDER
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert refused(rebooted.ask(A, 1)) == S.REASON_HOLD_EXPIRED
    assert refused(rebooted.ask(B, 1)) == S.REASON_NOT_HOLDER


def test_released_without_trade_is_auction_closed_after_a_reboot(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.send(A, S.BID, auc=1, price=25000, ereq=1000)
    site.send(B, S.BID, auc=1, price=26000, ereq=1000)  # A outbid
    site.send(B, S.BID, auc=2, price=26000, ereq=1000)
    site.send(0, S.TERMINATE, term=1)  # every hold released, no answer
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert refused(rebooted.ask(A, 1)) == S.REASON_AUCTION_CLOSED
    assert refused(rebooted.ask(B, 1)) == S.REASON_AUCTION_CLOSED
    assert refused(rebooted.ask(0, 2)) == S.REASON_NOT_HOLDER


def test_another_bidders_trade_is_not_holder(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.send(A, S.BID, auc=1, price=25000, ereq=1000)
    site.trade(B, 1, 27000, 800)  # outbids A, confirms
    assert refused(site.ask(A, 1)) == S.REASON_NOT_HOLDER
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert refused(rebooted.ask(A, 1)) == S.REASON_NOT_HOLDER
    assert committed(rebooted.ask(B, 1), 27000, 800)


def test_no_record_is_unknown_auction(tmp_path: Path) -> None:
    site = Site(tmp_path)
    assert refused(site.ask(A, 5)) == S.REASON_UNKNOWN_AUCTION
    # a refused bid leaves no hold to decide on either
    assert refused(site.send(A, S.BID, auc=6, price=100, ereq=100)) == S.REASON_BELOW_RESERVE
    assert refused(site.ask(A, 6)) == S.REASON_UNKNOWN_AUCTION
    # auction 12's records do not answer for auction 1 (its number is a prefix)
    site.trade(A, 12)
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert refused(rebooted.ask(A, 1)) == S.REASON_UNKNOWN_AUCTION


def test_without_an_audit_trail_a_forgotten_trade_is_unknown() -> None:
    site = Site(None, audit=None)
    site.trade(A, 1)
    assert committed(site.ask(A, 1), 25000, 100)  # the ring still knows
    for auc in range(2, 12):
        site.trade(B, auc)
    assert refused(site.ask(A, 1)) == S.REASON_UNKNOWN_AUCTION


def _write_trail(directory: Path, files: list[list[dict]]) -> None:
    """Audit files audit.0 (newest) .. from record lists, as AuditLog writes them."""
    directory.mkdir(parents=True)
    for index, records in enumerate(files):
        with (directory / f"audit.{index}").open("wb") as handle:
            for record in records:
                head, text = encode_record(record)
                handle.write((head + text).encode() + b"\n")


def test_a_terminate_record_alone_is_not_conclusive(tmp_path: Path) -> None:
    """The trade and its accepted bid rotated out, a later Terminate's record is still kept:
    the node cannot tell, so it says unknown_auction, never "not committed"."""
    _write_trail(tmp_path / "audit", [
        [{"k": "boot", "ep": 1000, "n": 40, "t": 1},
         {"k": "terminate", "auc": 1, "b": 0, "term": 1, "released": 0, "n": 41, "t": 2},
         {"k": "confirm", "auc": 1, "b": A, "r": S.REASON_AUCTION_CLOSED, "n": 42, "t": 3},
         {"k": "bid", "auc": 1, "b": B, "p": 100, "e": 5, "r": S.REASON_AUCTION_CLOSED,
          "n": 43, "t": 4}],
    ])
    site = Site(tmp_path)
    assert refused(site.ask(A, 1)) == S.REASON_UNKNOWN_AUCTION
    assert refused(site.ask(B, 1)) == S.REASON_UNKNOWN_AUCTION


def test_torn_trade_record_is_not_a_trade(tmp_path: Path) -> None:
    """Power cut while the trade record was written: the node never committed it."""
    site = Site(tmp_path)
    site.send(A, S.BID, auc=1, price=25000, ereq=1000)
    with open(tmp_path / "audit" / "audit.0", "ab") as handle:
        handle.write(b'3f2a91c0 {"k": "trade", "auc": 1, "b": 1001, "p": 25000, "e": 10\n')
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert refused(rebooted.ask(A, 1)) == S.REASON_AUCTION_CLOSED


class FailingFlash(AuditLog):
    """An audit log on flash that starts failing (full, worn) after `good` more records."""

    good = 10**9

    def append(self, record: dict) -> bool:
        if self.good <= 0:
            self.errors += 1
            return False
        self.good -= 1
        return super().append(record)


def test_no_record_no_trade(tmp_path: Path) -> None:
    audit = FailingFlash(str(tmp_path / "audit"), 16384, 4)
    site = Site(tmp_path, audit=audit)
    assert site.send(A, S.BID, auc=1, price=25000, ereq=1000)["t"] == S.BID_ACCEPT
    audit.good = 0  # the trade record cannot be written
    assert site.send(A, S.BID_CONFIRM, auc=1, price=25000, ereq=1000) is None  # unanswered
    assert site.battery.remaining_wh() == 10000 and site.core.stats["trades"] == 0
    assert site.core.stats["dropped"]["unrecorded"] == 1 and audit.errors == 1
    assert site.core.ledger.holds[1][0] == A  # held still: a re-sent confirm may commit it
    audit.good = 10**9
    assert committed(site.send(A, S.BID_CONFIRM, auc=1, price=25000, ereq=1000), 25000, 1000)
    assert [r["k"] for r in read_all(audit.directory)[0]] == ["bid", "trade"]


def test_audit_append_reports_whether_the_record_is_on_flash(tmp_path: Path) -> None:
    audit = AuditLog(str(tmp_path / "audit"), 16384, 4)
    assert audit.append({"k": "boot", "ep": 1}) is True
    os.remove(audit.path)
    os.mkdir(audit.path)  # audit.0 can no longer be opened for writing (even by root)
    assert audit.append({"k": "boot", "ep": 2}) is False
    assert audit.errors == 1 and audit.appended == 1


def test_bid_after_a_commit_is_auction_closed(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.trade(A, 1)
    assert refused(site.send(B, S.BID, auc=1, price=40000, ereq=100)) == S.REASON_AUCTION_CLOSED
    assert refused(site.send(A, S.BID, auc=1, price=40000, ereq=100)) == S.REASON_AUCTION_CLOSED
    assert not site.core.ledger.holds
    assert committed(site.ask(A, 1), 25000, 100)  # the ring's entry is still the trade


def test_repeat_confirm_still_answered(tmp_path: Path) -> None:
    site = Site(tmp_path)
    site.trade(A, 1, 26000, 700)
    again = site.send(A, S.BID_CONFIRM, auc=1, price=26000, ereq=700)
    assert committed(again, 26000, 700)
    other = site.send(B, S.BID_CONFIRM, auc=1, price=26000, ereq=700)
    assert refused(other) == S.REASON_NOT_HOLDER
    assert site.battery.remaining_wh() == 9300 and site.core.stats["trades"] == 1
