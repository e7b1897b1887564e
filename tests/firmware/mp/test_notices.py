"""Market notices on the board (MicroPython): only this board's own, hub-signed notice counts.

A notice is signed with the board's own notice key (derive_notice_key(master, id), key id =
the board's id). The old site-wide notice (key id 0, derive_key(master, 0)), another board's
notice and a notice tagged with another board's key are refused, counted, and change nothing
in the bid evaluation. tests/firmware/test_notices.py runs real boards at the board heap.
"""

from mptest import FakeClock, collect, run

from firmware.etp_node.battery import SimBattery
from firmware.etp_node.core import NodeCore
from shared_etp import schema as S
from shared_etp.frame import NOTICE_CLEARING, NOTICE_REPUTATION, Keyring, Sender, decode_frame
from shared_etp.frame_dict import frame as make_frame
from shared_etp.signing import derive_key, derive_notice_key, encode_notice

MASTER = b"unit-test-master-secret-0123"
DEV = 7
OTHER = 8
KEY = derive_key(MASTER, DEV)
OWN_NOTICE_KEY = derive_notice_key(MASTER, DEV)
REPUTATION_TOPIC = "etp/v1/s1/market/7/reputation"
CLEARING_TOPIC = "etp/v1/s1/market/7/clearing"
SHUNNED = {1001: 500}  # below min_reputation 2000
HIGH_PRICES = [40000, 41000, 42000]  # the market reference far above the 20000 mc reserve


def make(dynamic=False):
    clock = FakeClock()
    config = {
        "device_id": DEV, "site": "s1", "key": KEY, "notice_key": OWN_NOTICE_KEY,
        "reserve_mc": 20000, "pct_for_sale": 5000, "floor_wh": 500, "dynamic_reserve": dynamic,
        "hold_timeout_ms": 3000, "min_reputation": 2000, "epoch": 1000,
    }
    return NodeCore(config, SimBattery(capacity_wh=10000, soc=10000), None, clock), clock


KEYS = Keyring()
KEYS.add(DEV, KEY)


def bid(core, clock, bidder, auc, price):
    """A Bid from `bidder`; returns the board's answer: BidAccept's type or the reject reason."""
    sender = Sender(bidder, DEV, KEY, 1, clock=clock)
    frame, _ = make_frame(sender, S.BID, dst=DEV, auc=auc, price=price, ereq=100)
    replies = core.handle("etp/v1/s1/bess/7/req", frame)
    assert len(replies) == 1, replies
    reply = decode_frame(replies[0][1], KEYS)
    return reply["reason"] if reply["t"] == S.BID_REJECT else reply["t"]


def forgeries(clock):
    """(what, notice) pairs a board must refuse, each carrying the shunning reputation."""
    ts = clock()
    return [
        ("old site-wide key", encode_notice(NOTICE_REPUTATION, SHUNNED, 0, 0,
                                            derive_key(MASTER, 0), ts=ts)),
        ("another board's notice", encode_notice(NOTICE_REPUTATION, SHUNNED, 0, OTHER,
                                                 derive_notice_key(MASTER, OTHER), ts=ts)),
        ("another board's key, this board's kid", encode_notice(
            NOTICE_REPUTATION, SHUNNED, 0, DEV, derive_notice_key(MASTER, OTHER), ts=ts)),
        ("this board's device key", encode_notice(NOTICE_REPUTATION, SHUNNED, 0, DEV, KEY,
                                                  ts=ts)),
        ("signed as a board, not the hub", encode_notice(NOTICE_REPUTATION, SHUNNED, OTHER, DEV,
                                                         OWN_NOTICE_KEY, ts=ts)),
    ]


def test_own_notice_accepted_and_used():
    core, clock = make()
    notice = encode_notice(NOTICE_REPUTATION, SHUNNED, 0, DEV, OWN_NOTICE_KEY, ts=clock())
    assert core.handle(REPUTATION_TOPIC, notice) == []
    assert core.stats["notices"] == 1 and core.stats["protocol_errors"] == {}
    assert bid(core, clock, 1001, 1, 30000) == S.REASON_LOW_REPUTATION
    assert bid(core, clock, 1002, 2, 30000) == S.BID_ACCEPT


def test_own_clearing_notice_moves_the_reserve():
    core, clock = make(dynamic=True)
    assert bid(core, clock, 1002, 1, 25000) == S.BID_ACCEPT  # no market reference yet
    notice = encode_notice(NOTICE_CLEARING, HIGH_PRICES, 0, DEV, OWN_NOTICE_KEY, ts=clock())
    core.handle(CLEARING_TOPIC, notice)
    assert core.stats["notices"] == 1
    assert bid(core, clock, 1003, 2, 25000) == S.REASON_BELOW_MARKET


def test_forged_notices_refused_counted_and_ignored():
    for what, forged in forgeries(FakeClock()):
        core, clock = make()
        core.handle(REPUTATION_TOPIC, forged)
        assert core.stats["notices"] == 0, what
        assert sum(core.stats["protocol_errors"].values()) == 1, (what, core.stats)
        assert bid(core, clock, 1001, 1, 30000) == S.BID_ACCEPT, what


def test_refusal_reasons():
    core, clock = make()
    for _, forged in forgeries(clock):
        core.handle(REPUTATION_TOPIC, forged)
    errors = core.stats["protocol_errors"]
    # unknown key: key id 0 and key id 8 (the board holds only its own); bad tag: the rest
    assert errors == {"unknown_key": 3, "bad_tag": 2}, errors


def test_another_boards_topic_is_not_read():
    core, clock = make()
    notice = encode_notice(NOTICE_REPUTATION, SHUNNED, 0, DEV, OWN_NOTICE_KEY, ts=clock())
    core.handle("etp/v1/s1/market/8/reputation", notice)
    core.handle("etp/v1/s1/market/reputation", notice)  # the old site-wide topic
    assert core.stats["notices"] == 0 and core.stats["dropped"] == {"unknown_topic": 2}


def test_forgery_does_not_replace_a_genuine_notice():
    core, clock = make()
    core.handle(REPUTATION_TOPIC, encode_notice(NOTICE_REPUTATION, {1001: 9000}, 0, DEV,
                                                OWN_NOTICE_KEY, ts=clock()))
    clock.advance(1000)
    for _, forged in forgeries(clock):
        core.handle(REPUTATION_TOPIC, forged)
    assert bid(core, clock, 1001, 1, 30000) == S.BID_ACCEPT
    assert core.stats["notices"] == 1


run(collect(globals()))
