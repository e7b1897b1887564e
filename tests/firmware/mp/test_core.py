"""NodeCore under MicroPython: queries, bids, holds, confirms, faults, replay, bad input."""

import sys

from mptest import FakeClock, collect, run, tmp_dir

from firmware.etp_node.audit import AuditLog
from firmware.etp_node.audit_dump import read_all
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import schema as S
from shared_etp.frame import (
    NOTICE_CLEARING,
    NOTICE_REPUTATION,
    Keyring,
    Sender,
    decode_frame,
)
from shared_etp.frame_dict import frame as make_frame
from shared_etp.signing import derive_key, derive_notice_key, encode_notice

MASTER = b"unit-test-master-secret-0123"
DEV = 7
KEY = derive_key(MASTER, DEV)
NOTICE_KEY = derive_notice_key(MASTER, DEV)  # this board's own
TOPIC_REQ = "etp/v1/s1/bess/7/req"


def make(clock=None, audit=None, **overrides):
    """A node for device 7 on a full 10 kWh pack: 4500 Wh for sale at a 20000 mc reserve."""
    clock = clock or FakeClock()
    config = {
        "device_id": DEV, "site": "s1", "key": KEY, "notice_key": NOTICE_KEY,
        "reserve_mc": 20000, "pct_for_sale": 5000, "floor_wh": 500, "dynamic_reserve": False,
        "hold_timeout_ms": 3000, "min_reputation": 2000, "status_interval_ms": 5000,
        "epoch": 1000,
    }
    config.update(overrides)
    battery = SimBattery(capacity_wh=10000, soc=10000)
    core = NodeCore(config, battery, audit, clock)
    return core, battery, clock


class Bidder:
    """Signs frames for the node as one sender (hub 0 or an aggregator), with the node's key."""

    def __init__(self, src, clock):
        self.sender = Sender(src, DEV, KEY, 1, clock=clock)

    def frame(self, msg_type, **fields):
        return make_frame(self.sender, msg_type, dst=DEV, **fields)


KEYS = Keyring()
KEYS.add(DEV, KEY)


def one(replies):
    """The single (topic, decoded message) a handled request produced."""
    assert len(replies) == 1, replies
    topic, frame = replies[0]
    return topic, decode_frame(frame, KEYS)


def bid(core, bidder, auc, price, ereq):
    """Send a Bid; return the decoded answer after checking it is addressed to the bidder."""
    frame, msg = bidder.frame(S.BID, auc=auc, price=price, ereq=ereq)
    topic, reply = one(core.handle(TOPIC_REQ, frame))
    assert topic == "etp/v1/s1/bess/7/resp"
    assert reply["id"] == msg["id"] and reply["dst"] == bidder.sender.src
    return reply


def confirm(core, bidder, auc, price, ereq):
    """Send a BidConfirm; return the decoded answer."""
    frame, msg = bidder.frame(S.BID_CONFIRM, auc=auc, price=price, ereq=ereq)
    reply = one(core.handle(TOPIC_REQ, frame))[1]
    assert reply["id"] == msg["id"]
    return reply


def test_birth_will_status_topics():
    core, _, _ = make()
    topic, reg = core.birth()
    assert topic == "etp/v1/s1/bess/7/birth"
    msg = decode_frame(reg, KEYS)
    assert msg["t"] == S.REGISTER and msg["etot"] == 10000 and msg["erem"] == 10000
    assert msg["sale"] == 20000 and msg["pct"] == 5000
    topic, will = core.will()
    assert topic == "etp/v1/s1/bess/7/death"
    assert decode_frame(will, KEYS)["t"] == S.DEVICE_FAILURE
    assert core.subscriptions() == ["etp/v1/s1/bess/7/req", "etp/v1/s1/market/7/reputation",
                                    "etp/v1/s1/market/7/clearing", "etp/v1/s1/market/7/time"]


def test_query_answers_state_and_sellable():
    core, _, clock = make()
    frame, msg = Bidder(0, clock).frame(S.QUERY, auc=9)
    reply = one(core.handle(TOPIC_REQ, frame))[1]
    assert reply["t"] == S.QUERY_RESPONSE and reply["id"] == msg["id"] and reply["auc"] == 9
    assert reply["erem"] == 10000 and reply["soc"] == 10000 and reply["sale"] == 20000
    assert reply["ereq"] == 10000 * 5000 // 10000 - 500  # sellable now
    assert reply["volt"] > 14 * 4000


def test_bid_accept_then_confirm_commits_energy():
    core, battery, clock = make()
    b = Bidder(1001, clock)
    reply = bid(core, b, 1, 25000, 1000)
    assert reply["t"] == S.BID_ACCEPT and reply["price"] == 25000 and reply["ereq"] == 1000
    assert core.sellable_wh() == 4500 - 1000
    reply = confirm(core, b, 1, 25000, 1000)
    assert reply["t"] == S.BID_ACCEPT
    assert battery.remaining_wh() == 9000 and battery.discharge_w() > 0
    assert core.stats["trades"] == 1 and core.stats["sold_wh"] == 1000 and not core.ledger.holds


def test_repeated_confirm_is_answered_again_without_a_second_delivery():
    core, battery, clock = make()
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    assert confirm(core, b, 1, 25000, 1000)["t"] == S.BID_ACCEPT
    again = confirm(core, b, 1, 25000, 1000)  # a new frame: the hub re-sends after a restart
    assert again["t"] == S.BID_ACCEPT and again["price"] == 25000 and again["ereq"] == 1000
    assert battery.remaining_wh() == 9000 and core.stats["trades"] == 1
    other = confirm(core, Bidder(1002, clock), 1, 25000, 1000)
    assert other["t"] == S.BID_REJECT and other["reason"] == S.REASON_NOT_HOLDER
    changed = confirm(core, b, 1, 26000, 1000)
    assert changed["t"] == S.BID_REJECT and battery.remaining_wh() == 9000


def test_below_reserve_rejected():
    core, _, clock = make()
    reply = bid(core, Bidder(1001, clock), 1, 19999, 100)
    assert reply["t"] == S.BID_REJECT and reply["reason"] == S.REASON_BELOW_RESERVE
    assert core.stats["reject_reasons"][str(S.REASON_BELOW_RESERVE)] == 1


def test_dynamic_reserve_follows_clearing_prices_and_can_be_off():
    for dynamic, expected in ((True, S.REASON_BELOW_MARKET), (False, S.BID_ACCEPT)):
        core, _, clock = make(dynamic_reserve=dynamic)
        notice = encode_notice(NOTICE_CLEARING, [40000, 42000, 41000], 0, DEV, NOTICE_KEY,
                               ts=clock())
        assert core.handle("etp/v1/s1/market/7/clearing", notice) == []
        assert core.stats["notices"] == 1
        reply = bid(core, Bidder(1001, clock), 1, 25000, 100)
        got = reply.get("reason") if reply["t"] == S.BID_REJECT else reply["t"]
        assert got == expected, (dynamic, reply)


def test_scarcity_raises_reserve():
    core, _, clock = make(dynamic_reserve=True, scarcity_gain_pct=50)
    # taking all 4500 sellable Wh costs +50 %; a tiny bid barely moves it
    b = Bidder(1001, clock)
    assert bid(core, b, 1, 21000, 4500)["reason"] == S.REASON_BELOW_MARKET
    assert bid(core, b, 2, 21000, 10)["t"] == S.BID_ACCEPT


def test_low_reputation_from_notice():
    core, _, clock = make()
    notice = encode_notice(NOTICE_REPUTATION, {1001: 500, 1002: 9000}, 0, DEV, NOTICE_KEY,
                           ts=clock())
    core.handle("etp/v1/s1/market/7/reputation", notice)
    assert bid(core, Bidder(1001, clock), 1, 30000, 100)["reason"] == S.REASON_LOW_REPUTATION
    assert bid(core, Bidder(1002, clock), 1, 30000, 100)["t"] == S.BID_ACCEPT


def test_local_history_lowers_reputation_of_abandoning_bidder():
    core, _, clock = make()
    b = Bidder(1001, clock)
    for auc in range(1, 5):
        assert bid(core, b, auc, 30000, 100)["t"] == S.BID_ACCEPT
        clock.advance(3001)
        core.tick()
    assert core.stats["expired"] == 4
    assert bid(core, b, 10, 30000, 100)["reason"] == S.REASON_LOW_REPUTATION


def test_forged_notice_ignored():
    core, _, clock = make()
    other_key = derive_notice_key(b"other-master-secret!", DEV)
    forged = encode_notice(NOTICE_REPUTATION, {1001: 0}, 0, DEV, other_key)
    core.handle("etp/v1/s1/market/7/reputation", forged)
    assert core.stats["protocol_errors"]["bad_tag"] == 1
    assert bid(core, Bidder(1001, clock), 1, 30000, 100)["t"] == S.BID_ACCEPT


def test_outbid_and_replacement():
    core, _, clock = make()
    a, b = Bidder(1001, clock), Bidder(1002, clock)
    assert bid(core, a, 1, 25000, 1000)["t"] == S.BID_ACCEPT
    assert bid(core, b, 1, 25000, 1000)["reason"] == S.REASON_OUTBID  # equal is not better
    assert bid(core, b, 1, 26000, 1000)["t"] == S.BID_ACCEPT  # better replaces the hold
    assert core.ledger.held_wh() == 1000
    assert confirm(core, a, 1, 25000, 1000)["reason"] == S.REASON_NOT_HOLDER
    assert confirm(core, b, 1, 26000, 1000)["t"] == S.BID_ACCEPT


def test_never_oversell_across_auctions():
    core, battery, clock = make()
    bidders = [Bidder(1001 + i, clock) for i in range(5)]
    accepted = 0
    for i, b in enumerate(bidders):
        for auc in (1, 2, 3):
            reply = bid(core, b, auc * 10 + i, 20000 + i * 100, 1000)
            if reply["t"] == S.BID_ACCEPT:
                accepted += 1
            else:
                assert reply["reason"] == S.REASON_INSUFFICIENT_ENERGY
    assert accepted == 4  # 4500 Wh sellable, 1000 Wh each
    assert core.ledger.held_wh() <= 4500
    for auc, hold in list(core.ledger.holds.items()):
        b = bidders[hold[0] - 1001]
        assert confirm(core, b, auc, hold[1], hold[2])["t"] == S.BID_ACCEPT
    assert battery.remaining_wh() == 6000
    assert battery.remaining_wh() * 5000 // 10000 - 500 >= 0


def test_hold_expires_and_late_confirm_rejected():
    core, battery, clock = make()
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    clock.advance(2999)
    core.tick()
    assert len(core.ledger.holds) == 1
    clock.advance(2)
    core.tick()
    assert len(core.ledger.holds) == 0 and core.sellable_wh() == 4500
    assert confirm(core, b, 1, 25000, 1000)["reason"] == S.REASON_HOLD_EXPIRED
    assert battery.remaining_wh() == 10000


def terminate(core, asker, auc=None):
    """Send a Terminate (with auc: the question "did you commit it to me?"); the decoded
    answer, or None when there is none."""
    fields = {} if auc is None else {"auc": auc}
    frame, msg = asker.frame(S.TERMINATE, term=1, **fields)
    replies = core.handle(TOPIC_REQ, frame)
    if not replies:
        return None
    topic, reply = one(replies)
    assert topic == "etp/v1/s1/bess/7/resp"
    assert reply["id"] == msg["id"] and reply["dst"] == asker.sender.src and reply["auc"] == auc
    return reply


def test_terminate_releases_and_closes():
    core, _, clock = make()
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    answer = terminate(core, Bidder(0, clock), 1)  # the hub's: the hold was not its
    assert answer["t"] == S.BID_REJECT and answer["reason"] == S.REASON_NOT_HOLDER
    assert len(core.ledger.holds) == 0
    assert bid(core, b, 1, 30000, 100)["reason"] == S.REASON_AUCTION_CLOSED
    assert confirm(core, b, 1, 25000, 1000)["reason"] == S.REASON_AUCTION_CLOSED


def test_terminate_without_auction_releases_all_and_answers_nothing():
    core, _, clock = make()
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    bid(core, b, 2, 25000, 1000)
    assert terminate(core, Bidder(0, clock)) is None
    assert not core.ledger.holds and core.stats["outcomes"] == 0


def test_terminate_answers_from_the_trail_after_a_reboot():
    clock = FakeClock()
    directory = tmp_dir("core-ask")
    core, _, _ = make(clock=clock, audit=AuditLog(directory, 4096, 4))
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    confirm(core, b, 1, 25000, 1000)
    bid(core, b, 2, 25000, 500)
    clock.advance(3001)
    core.tick()  # the hold in auction 2 expires
    clock.advance(3000)
    # a reboot: a new node over the same flash, nothing in RAM
    core, _, _ = make(clock=clock, audit=AuditLog(directory, 4096, 4), epoch=1001)
    b = Bidder(1001, clock)
    won = terminate(core, b, 1)
    assert won["t"] == S.BID_ACCEPT and won["price"] == 25000 and won["ereq"] == 1000
    assert "firmware.etp_node.audit_read" not in sys.modules  # loaded for it, then dropped
    assert terminate(core, Bidder(1002, clock), 1)["reason"] == S.REASON_NOT_HOLDER
    assert terminate(core, b, 2)["reason"] == S.REASON_HOLD_EXPIRED
    assert terminate(core, b, 3)["reason"] == S.REASON_UNKNOWN_AUCTION
    assert core.stats["outcomes"] == 4 and core.stats["rejected"] == 0


def test_fault_sends_device_failure_on_next_tick():
    core, battery, clock = make()
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    battery.inject_fault("undervolt")
    out = core.tick()
    topics = [t for t, _ in out]
    assert topics[0] == "etp/v1/s1/bess/7/death", topics
    failure = decode_frame(out[0][1], KEYS)
    assert failure["reason"] == S.REASON_VOLTAGE_OUT_OF_RANGE
    assert failure["health"] == S.HEALTH_FAULT
    assert len(core.ledger.holds) == 0
    assert bid(core, b, 2, 30000, 100)["reason"] == S.REASON_DEVICE_FAULT
    battery.inject_fault("clear")
    out = core.tick()
    assert out[0][0] == "etp/v1/s1/bess/7/birth"
    assert bid(core, b, 3, 30000, 100)["t"] == S.BID_ACCEPT


def test_replay_and_garbage_counted_never_raise():
    core, _, clock = make()
    frame, _ = Bidder(1001, clock).frame(S.BID, auc=1, price=25000, ereq=100)
    assert len(core.handle(TOPIC_REQ, frame)) == 1
    assert core.handle(TOPIC_REQ, frame) == []
    assert core.stats["protocol_errors"]["replay"] == 1
    for junk in (b"", b"\x00", b"\xa1" * 40, bytes(range(256)), frame[:-1] + b"\x00"):
        assert core.handle(TOPIC_REQ, junk) == []
    assert core.handle("etp/v1/s1/other", frame) == []
    assert sum(core.stats["protocol_errors"].values()) >= 5


def test_frames_from_before_boot_refused():
    clock = FakeClock()
    bidder = Bidder(1001, clock)
    captured, _ = bidder.frame(S.BID, auc=1, price=25000, ereq=100)
    clock.advance(2500)  # the node reboots 2.5 s later; the frame's TTL (10 s) has not run out
    core, _, _ = make(clock=clock)
    assert core.handle(TOPIC_REQ, captured) == []
    assert core.stats["dropped"]["before_boot"] == 1
    assert bid(core, bidder, 2, 25000, 100)["t"] == S.BID_ACCEPT


def test_frame_for_other_device_dropped():
    core, _, clock = make()
    sender = Sender(1001, DEV, KEY, 1, clock=clock)
    frame, _ = make_frame(sender, S.BID, dst=8, auc=1, price=25000, ereq=1)
    assert core.handle(TOPIC_REQ, frame) == []
    assert core.stats["dropped"]["not_for_me"] == 1


def test_status_on_change_and_period():
    core, _, clock = make()
    assert core.tick()[0][0] == "etp/v1/s1/bess/7/status"  # first one at once
    clock.advance(100)
    assert core.tick() == []
    b = Bidder(1001, clock)
    bid(core, b, 1, 25000, 1000)
    confirm(core, b, 1, 25000, 1000)
    out = core.tick()  # discharge started, soc moved 10 %
    assert out and out[0][0].endswith("/status")
    clock.advance(5000)
    assert core.tick()[0][0].endswith("/status")


def test_periodic_status_keeps_its_schedule_when_ticks_are_late():
    core, _, clock = make()
    core.tick()  # first status at t0
    statuses = 0
    for _ in range(40):  # 40 ticks of 300 ms: 12 s, every tick late against a 5 s period
        clock.advance(300)
        statuses += len([t for t, _ in core.tick() if t.endswith("/status")])
    assert statuses == 2  # at 5.1 s and 10.2 s (drifting ones would come at 5.1 s and 10.2 s too)
    clock.advance(2700)  # t0 + 14.7 s: no status yet (the next is due at t0 + 15 s) ...
    assert core.tick() == []
    clock.advance(300)  # ... and at 15.0 s it comes on time, not at 15.3 s
    assert core.tick()[0][0].endswith("/status")
    clock.advance(60000)  # a long stall: one status, then the schedule restarts from now
    assert len(core.tick()) == 1
    clock.advance(4900)
    assert core.tick() == []


def test_audit_records_decisions_and_trades():
    clock = FakeClock()
    audit = AuditLog(tmp_dir("core-audit"), 4096, 2)
    core, _, _ = make(clock=clock, audit=audit)
    b = Bidder(1001, clock)
    bid(core, b, 1, 10, 100)
    bid(core, b, 1, 25000, 100)
    confirm(core, b, 1, 25000, 100)
    records, torn = read_all(audit.directory, 2)
    kinds = [r["k"] for r in records]
    assert kinds == ["bid", "bid", "trade"] and torn == 0
    assert records[0]["r"] == S.REASON_BELOW_RESERVE and records[2]["e"] == 100


run(collect(globals()))
