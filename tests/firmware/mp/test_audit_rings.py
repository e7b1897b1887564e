"""The audit trail's two rings on the unix port: trades kept while bids rotate out, the
trade ring's bound and sizing from the free flash, torn records in either ring."""

import os

from mptest import collect, run, tmp_dir

from firmware.etp_node import audit_boot
from firmware.etp_node.audit import AuditLog, encode_record
from firmware.etp_node.audit_dump import read_all, trail_files


def _names(path):
    return sorted(os.listdir(path))


def _trade(auction):
    return {
        "k": "trade",
        "auc": auction,
        "b": 1001,
        "p": 25000,
        "e": 100,
        "erem": 9000,
        "id": 70000 + auction,
    }


def _bid(auction):
    return {"k": "bid", "auc": auction, "b": 1002, "p": 21000, "e": 100, "r": 4}


def test_trade_outlives_bids():
    path = tmp_dir("rings-keep")
    log = AuditLog(path, 1000, 3, None, None, 4)
    log.append(_bid(1))
    log.append(_trade(1))
    for auction in range(2, 400):  # ~40 KB of bids through a 3 KB bid ring
        log.append(_bid(auction))
    records, torn = read_all(path, 3)
    assert torn == 0
    assert records[0]["k"] == "trade" and records[0]["auc"] == 1 and records[0]["n"] == 1
    assert records[0]["id"] == 70001 and records[0]["b"] == 1001
    bids = [r for r in records if r["k"] == "bid"]
    assert bids[0]["auc"] > 350 and bids[-1]["auc"] == 399  # the old bids rotated out
    assert [r["n"] for r in records[1:]] == list(range(records[1]["n"], 400))
    assert _names(path) == ["audit.0", "audit.1", "audit.2", "trade.0"], _names(path)


def test_trade_ring_is_bounded_and_numbered_up():
    path = tmp_dir("rings-trades")
    log = AuditLog(path, 1000, 2, None, None, 3)
    for auction in range(100):  # ~12 KB of trades through a 3 x 1 KB trade ring
        assert log.append(_trade(auction)) is True
    names = [n for n in _names(path) if n.startswith("trade.")]
    assert len(names) == 3, names
    first, last = audit_boot.trade_ids(path)
    assert last - first == 2 and last > 5
    assert sum(os.stat(path + "/" + n)[6] for n in names) <= 3000
    records, torn = read_all(path, 2)
    assert torn == 0 and records[-1]["auc"] == 99
    assert [r["auc"] for r in records] == list(range(records[0]["auc"], 100))
    assert trail_files(path, 2) == ["trade.%d" % i for i in range(first, last + 1)]
    # reboot: the ring and the numbering go on where they were
    log = AuditLog(path, 1000, 2, None, None, 3)
    assert log.trades[0] == first and log.trades[1] == last and log.next_n == 100
    log.append({"k": "boot", "ep": 2})
    log.append(_trade(100))
    records, _ = read_all(path, 2)
    assert [r["n"] for r in records[-2:]] == [100, 101] and records[-1]["auc"] == 100


def test_torn_trade_record_is_skipped_and_ended_at_boot():
    path = tmp_dir("rings-torn")
    log = AuditLog(path, 4000, 2, None, None, 2)
    log.append(_bid(1))
    log.append(_trade(1))
    head, text = encode_record(_trade(2))
    line = (head + text).encode()
    with open(path + "/trade.0", "ab") as handle:  # power lost mid-write
        handle.write(line[: len(line) // 2])
    records, torn = read_all(path, 2)
    assert [r["k"] for r in records] == ["bid", "trade"] and torn == 1
    log = AuditLog(path, 4000, 2, None, None, 2)  # reboot: the torn line is ended
    assert log.next_n == 2
    log.append(_trade(3))
    records, torn = read_all(path, 2)
    assert [r.get("auc") for r in records] == [1, 1, 3] and torn == 1
    assert [r["n"] for r in records] == [0, 1, 2]


def test_trade_ring_sized_from_free_flash():
    # the sizing rule: pct of (free + trail), at most max_kb, less the bid ring, at least 2
    config = {
        "audit_file_bytes": 16384,
        "audit_files": 4,
        "audit_flash_pct": 50,
        "audit_max_kb": 2048,
        "audit_trade_files": 0,
    }
    assert audit_boot.trade_segments(2 << 20, config) == 60
    assert audit_boot.trade_segments(1 << 20, config) == 28
    assert audit_boot.trade_segments(64 << 20, config) == 124  # audit_max_kb
    assert audit_boot.trade_segments(50000, config) == 2
    config["audit_flash_pct"] = 25
    assert audit_boot.trade_segments(2 << 20, config) == 28
    config["audit_flash_pct"] = 50
    config["audit_max_kb"] = 1 << 30
    path = tmp_dir("rings-size")
    stat = os.statvfs(path)
    want = audit_boot.trade_segments(stat[4] * stat[1], config)
    keep = audit_boot.recover(path, config)[2][3]
    assert abs(keep - want) <= 1, (keep, want)  # the host's disk may move a little meanwhile
    config["audit_max_kb"] = 256  # bounded: 256 KB in all, 64 KB of it the bid ring
    assert audit_boot.recover(path, config)[2][3] == 12
    config["audit_trade_files"] = 7  # fixed in the config: no sizing
    assert audit_boot.recover(path, config)[2][3] == 7


def test_a_shrunk_ring_drops_its_oldest_segments():
    path = tmp_dir("rings-shrink")
    log = AuditLog(path, 500, 2, None, None, 6)
    for auction in range(30):
        log.append(_trade(auction))
    assert len([n for n in _names(path) if n.startswith("trade.")]) == 6
    log = AuditLog(path, 500, 2, None, None, 3)  # less flash free at this boot
    log.append(_trade(30))
    log.append(_trade(31))
    log.append(_trade(32))
    log.append(_trade(33))
    assert len([n for n in _names(path) if n.startswith("trade.")]) == 3
    records, torn = read_all(path, 2)
    assert torn == 0 and records[-1]["auc"] == 33


run(collect(globals()))
