"""Audit retention that serves disputes (CPython core on a real directory): trades are kept in
their own ring while bids rotate out, a trade record names what the hub keeps of the trade
(the confirm's id and sender), the trade ring is sized from the free flash, and
`etp firmware audit` reads the whole trail back (`--all`, `--auction`, `--json`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from typer.testing import CliRunner

from firmware.etp_node import config as config_mod
from firmware.etp_node.audit import AuditLog
from firmware.etp_node.audit_boot import recover, trade_segments
from firmware.etp_node.audit_dump import read_all
from hub.cli.firmware import app as firmware_app
from hub.tools.firmware.audit import read_audit_dir
from shared_etp import schema as S
from tests.firmware.test_fw_terminate_ask import A, B, Site, committed, refused

SEGMENT = 2048  # small files, so a few hundred records rotate the bid ring many times


def _site(tmp: Path, bid_files: int = 2, trade_files: int = 4) -> Site:
    return Site(tmp, audit=AuditLog(str(tmp / "audit"), SEGMENT, bid_files, trades=trade_files))


def _audit(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(firmware_app, ["audit", *args])
    return result.exit_code, result.output


def test_trade_kept_while_bids_rotate_out(tmp_path: Path) -> None:
    site = _site(tmp_path)
    assert site.send(A, S.BID, auc=1, price=26000, ereq=700)["t"] == S.BID_ACCEPT
    accept = site.send(A, S.BID_CONFIRM, auc=1, price=26000, ereq=700)
    assert committed(accept, 26000, 700)
    for auc in range(2, 202):  # 200 refused bids: ~20 KB through a 2 x 2 KB bid ring
        assert refused(site.send(B, S.BID, auc=auc, price=100, ereq=5)) == S.REASON_BELOW_RESERVE
    report = read_audit_dir(tmp_path / "audit")
    assert report.torn == 0 and report.gaps == 0
    bids = [r for r in report.records if r["k"] == "bid"]
    assert bids[0]["auc"] > 150 and bids[-1]["auc"] == 201  # the early bids are gone
    assert report.complete_from == bids[0]["n"]
    (trade,) = report.trades
    # what a dispute checks against the hub's stored BidConfirm (its id, its sender) and terms
    assert trade["auc"] == 1 and trade["b"] == A and trade["p"] == 26000 and trade["e"] == 700
    assert trade["id"] == accept["id"]  # the BidAccept echoes the confirm's id
    assert trade["t"] == site.clock.now and trade["n"] == 1
    assert report.for_auction(1) == [trade]  # its bid rotated out, the trade is kept
    # a rebooted node still answers for it: the trade is in the trade ring's newest segment
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert committed(rebooted.ask(A, 1), 26000, 700)
    assert refused(rebooted.ask(B, 1)) == S.REASON_NOT_HOLDER


def test_trade_ring_keeps_many_trades_and_answers_within_the_bid_window(tmp_path: Path) -> None:
    site = _site(tmp_path, bid_files=2, trade_files=16)
    for auc in range(1, 121):  # 120 trades, each a bid record and a trade record
        site.trade(A if auc % 2 else B, auc, 25000 + auc, 20)
    records, torn = read_all(str(tmp_path / "audit"), 2)
    trades = [r for r in records if r["k"] == "trade"]
    assert torn == 0 and [r["auc"] for r in trades] == list(range(1, 121))  # none rotated out
    assert [r["n"] for r in records] == sorted(r["n"] for r in records)
    assert len(list((tmp_path / "audit").glob("trade.*"))) > 3
    assert not [r for r in records if r["k"] == "bid" and r["auc"] < 60]  # bids rotated out
    rebooted = Site(tmp_path, epoch=1001, clock=site.clock)
    assert committed(rebooted.ask(B, 120), 25120, 20)  # its bid is kept: answered
    assert committed(rebooted.ask(A, 119), 25119, 20)
    # auction 3's bid rotated out and its trade is in an older segment: the node does not
    # look that far for a Terminate (`etp firmware audit --auction 3` does)
    assert refused(rebooted.ask(A, 3)) == S.REASON_UNKNOWN_AUCTION
    code, out = _audit("--dir", str(tmp_path), "--auction", "3", "--json")
    assert code == 0, out
    kept, asked = json.loads(out)["records"]  # the trade, and the Terminate's own record
    assert kept["k"] == "trade" and kept["b"] == A and kept["p"] == 25003
    assert asked["k"] == "terminate" and asked["b"] == A and asked["n"] > kept["n"]


def test_audit_all_reads_both_rings_oldest_first(tmp_path: Path) -> None:
    site = _site(tmp_path)
    for auc in range(1, 31):
        site.trade(A, auc)
        site.send(B, S.BID, auc=auc, price=100, ereq=5)  # refused: chatter
    report = read_audit_dir(tmp_path / "audit")
    code, out = _audit("--dir", str(tmp_path / "audit"), "--all", "--json")
    assert code == 0, out
    data = json.loads(out)
    assert data["verified"] == len(report.records) == len(data["records"])
    assert data["records"] == report.records
    numbers = [r["n"] for r in data["records"]]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert data["trades"] == 30 and data["kinds"]["trade"] == 30
    assert data["files"][0].startswith("audit.") and data["files"][-1].startswith("trade.")
    assert data["oldest_trade_t"] == report.trades[0]["t"] and data["torn"] == 0
    # without --all: the last --limit records; text output: a summary, then one line each
    code, out = _audit("--dir", str(tmp_path), "--limit", "3", "--json")  # the flash dir
    assert code == 0 and json.loads(out)["records"] == report.records[-3:]
    code, out = _audit("--dir", str(tmp_path), "--all")
    assert code == 0, out
    lines = out.splitlines()
    assert "trades kept: 30" in out and "records verified" in lines[0]
    assert [json.loads(line) for line in lines if line.startswith("{")] == report.records
    code, out = _audit("--dir", str(tmp_path), "--auction", "999")
    assert code == 0 and "no record of auction 999 is kept" in out


def test_audit_cli_errors_are_clear(tmp_path: Path) -> None:
    code, out = _audit("--dir", str(tmp_path / "missing"))
    assert code == 1 and "is not a directory" in out
    code, out = _audit("--dir", str(tmp_path), "--port", "/dev/null")
    assert code == 1 and "exactly one of --port or --dir" in out
    code, out = _audit("--dir", str(tmp_path), "--limit", "-1")
    assert code == 1 and "--limit" in out


def test_torn_trade_record_is_skipped_and_counted(tmp_path: Path) -> None:
    site = _site(tmp_path)
    site.trade(A, 1)
    with open(tmp_path / "audit" / "trade.0", "ab") as handle:  # power lost mid-write
        handle.write(b'3f2a91c0 {"k": "trade", "auc": 2, "b": 1001, "p": 25000, "e": 10')
    report = read_audit_dir(tmp_path / "audit")
    assert [r["auc"] for r in report.trades] == [1] and report.torn == 1
    rebooted = Site(
        tmp_path,
        audit=AuditLog(str(tmp_path / "audit"), SEGMENT, 2, trades=4),
        epoch=1001,
        clock=site.clock,
    )
    rebooted.trade(B, 3)  # the torn line was ended at boot: the next record is whole
    report = read_audit_dir(tmp_path / "audit")
    assert [r["auc"] for r in report.trades] == [1, 3] and report.torn == 1
    assert refused(rebooted.ask(A, 2)) == S.REASON_UNKNOWN_AUCTION  # never committed


def test_trade_ring_sized_from_the_free_flash(tmp_path: Path) -> None:
    directory = str(tmp_path / "audit")
    config = config_mod.load(str(tmp_path / "none.json"))
    assert config["audit_flash_pct"] == 50 and config["audit_trade_files"] == 0
    stat = os.statvfs(tmp_path)
    free = stat.f_bavail * stat.f_frsize
    want = trade_segments(free, config)
    keep = recover(directory, config)[2][3]
    assert abs(keep - want) <= 1  # the disk may move a little meanwhile
    assert keep == 124 or (keep < 124 and free < 5 << 20)  # 2 MB at most (audit_max_kb)
    # what the trail holds counts as free: the figure stays put as the trail fills
    site = _site(tmp_path)
    for auc in range(1, 41):
        site.trade(A, auc, 25000, 20)
    assert abs(recover(directory, config)[2][3] - want) <= 1
    config["audit_trade_files"] = 9  # set in etp_config.json: no sizing
    assert recover(directory, config)[2][3] == 9
