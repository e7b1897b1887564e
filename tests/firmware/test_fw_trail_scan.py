"""A Terminate answered from a full 4 x 16 KB bid ring (and a trade ring of 8+ segments of
older trades beside it) on the unix port at the board heap.

The bid asked about is in the bid ring's oldest file, so every file of it is read, and the
trade ring only back to that bid (not the older trades); the node's code is the
.mpy build loaded as a board loads it (firmware/bench_trail_scan.py prints the time and heap
figures; firmware/README.md quotes them).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware.etp_node.audit import AuditLog
from hub.tools.firmware.binaries import micropython_binary
from hub.tools.firmware.build import REPO_ROOT, install_image
from shared_etp import schema as S
from shared_etp.compat import now_ms
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key
from tests.firmware.conftest import BOARD_HEAP

pytestmark = pytest.mark.micropython
DEV = 9
KEY = derive_key(b"trail-scan-master-secret-0123", DEV)
SCRIPT = REPO_ROOT / "firmware" / "bench_trail_scan.py"
FILE_BYTES = 16384
TIMED_HEAP = "80K"
SCAN_FREE_MAX = 8704  # bytes of free heap an answer from the trail may need at most
OLD_TRADE_SEGMENTS = 8  # of trades older than every kept bid: never read for an answer
ASKS = [(1001, 7), (1001, 99), (1002, 1000), (0, 7)] + [(1001, 7)] * 11  # (asker, auction)
ROOM_BYTES = len(ASKS) * 120  # a terminate record is ~110 bytes


def full_trail(directory: Path) -> int:
    """Fill 4 x 16 KB of trail: auction 7 traded to 1001 first (it ends up in audit.3), then
    other auctions' bids, trades (odd auctions), expiries (even ones) and terminates until the
    trail is full, less room in audit.0 for the asks' own terminate records (one more
    rotation would drop audit.3). Before all that, 8 trade segments of older trades. Returns
    the number of records."""
    audit = AuditLog(str(directory), FILE_BYTES, 4, trades=64)
    count = 0
    while audit.trades[1] < OLD_TRADE_SEGMENTS:
        audit.append({"k": "trade", "auc": 500_000 + count, "b": 1002, "p": 25000, "e": 100,
                      "id": count, "t": 1_794_000_000_000 + count})
        count += 1
    audit.append({"k": "bid", "auc": 7, "b": 1001, "p": 26000, "e": 700, "r": 0, "t": 1})
    audit.append({"k": "trade", "auc": 7, "b": 1001, "p": 26000, "e": 700, "id": 77, "t": 2})
    count += 2
    auction = 1000
    while True:
        for record in (
            {"k": "bid", "auc": auction, "b": 1002, "p": 25000, "e": 100, "r": 0},
            {"k": "bid", "auc": auction, "b": 1003, "p": 21000, "e": 100, "r": 4},
            {"k": "trade", "auc": auction, "b": 1002, "p": 25000, "e": 100, "id": auction}
            if auction % 2 else {"k": "expire", "auc": auction, "b": 1002, "e": 100},
            {"k": "terminate", "auc": auction, "b": 0, "term": 1, "released": 0},
        ):
            if (directory / "audit.3").exists() and audit.size + ROOM_BYTES > FILE_BYTES:
                return count
            record["t"] = 1_795_000_000_000 + count
            audit.append(record)
            count += 1
        auction += 1


def test_full_trail_scan_answers_at_board_heap(tmp_path: Path, mpy_image: Path) -> None:
    records = full_trail(tmp_path / "audit")
    sizes = [(tmp_path / "audit" / f"audit.{i}").stat().st_size for i in range(4)]
    assert all(size > FILE_BYTES - ROOM_BYTES - 200 for size in sizes), sizes
    trade_bytes = sum(p.stat().st_size for p in (tmp_path / "audit").glob("trade.*"))
    assert trade_bytes > OLD_TRADE_SEGMENTS * (FILE_BYTES - 200)
    senders: dict[int, Sender] = {}
    frames = bytearray()
    for asker, auc in ASKS:
        # stamped 1.5 s ahead: the node refuses frames stamped before its boot (less 2 s)
        sender = senders.setdefault(asker, Sender(asker, DEV, KEY, 1,
                                                  clock=lambda: now_ms() + 1500))
        frame, _ = sender.frame(S.TERMINATE, dst=DEV, auc=auc, term=1, ttl=60000)
        frames += len(frame).to_bytes(2, "big") + frame
    (tmp_path / "frames.bin").write_bytes(bytes(frames))
    query, _ = senders[1001].frame(S.QUERY, dst=DEV, ttl=60000)  # the baseline: no scan
    (tmp_path / "query.bin").write_bytes(len(query).to_bytes(2, "big") + query)
    config = {"device_id": DEV, "site": "scan", "key": KEY.hex(), "reserve_mc": 20000,
              "pct_for_sale": 5000, "dynamic_reserve": False, "min_reputation": 0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    flash = tmp_path / "flash"
    install_image(mpy_image, flash)
    shutil.copyfile(SCRIPT, flash / SCRIPT.name)

    def run(*extra: str, frames_file: str = "frames.bin", heap: str = BOARD_HEAP) -> dict:
        """One board process over a fresh copy of the full trail (each answer appends the
        Terminate's own record)."""
        shutil.rmtree(tmp_path / "audit-run", ignore_errors=True)
        shutil.copytree(tmp_path / "audit", tmp_path / "audit-run")
        result = subprocess.run(
            [micropython_binary(), "-X", f"heapsize={heap}", SCRIPT.name,
             str(tmp_path / frames_file), str(tmp_path / "config.json"),
             str(tmp_path / "audit-run"), *extra],
            capture_output=True, text=True, timeout=120, cwd=flash,
        )
        assert result.returncode == 0 and result.stdout.strip(), result.stdout + result.stderr
        lines = result.stdout.strip().splitlines()
        data = json.loads(lines[-1])
        data["answers"] = [line.split()[1] for line in lines if line.startswith("answer ")]
        return data

    # Every answer, timed, in the simulator's heap: loaded as boot.py loads it (the trail's
    # tails read before the code), a 64K heap's free space is left in holes too small for
    # the scan now and then, for the code before the trade ring as much (measured); the
    # heap an answer needs is measured below, at the board heap, with the holes filled.
    data = run(heap=TIMED_HEAP)
    keys = Keyring()
    keys.add(DEV, KEY)
    answers = []
    for frame in data["answers"]:
        assert frame != "-", json.dumps(data)
        reply = decode_frame(bytes.fromhex(frame), keys)
        answers.append([reply["auc"], reply["t"], reply.get("reason"), reply.get("price"),
                        reply.get("ereq")])
    data["answers"] = answers
    print(f"trail: {records} records, {sum(sizes)} bytes in the bid ring's 4 files,"
          f" {trade_bytes} in the trade ring; heap {TIMED_HEAP}")
    print(json.dumps(data))
    assert answers == [
        [7, S.BID_ACCEPT, None, 26000, 700],  # the trade of the oldest bid, to its buyer
        [99, S.BID_REJECT, S.REASON_UNKNOWN_AUCTION, None, None],
        [1000, S.BID_REJECT, S.REASON_HOLD_EXPIRED, None, None],
        [7, S.BID_REJECT, S.REASON_NOT_HOLDER, None, None],  # asked by the hub: not its trade
    ] + [[7, S.BID_ACCEPT, None, 26000, 700]] * (len(ASKS) - 4)
    assert data["trail_bytes"] > sum(sizes) + trade_bytes  # plus the asks' terminate records
    assert data["stats"]["outcomes"] == len(ASKS) and data["stats"]["rejected"] == 0
    # The heap an answer needs: fresh boards with less and less of the heap left free, for a
    # Terminate answered from the trail and, as the baseline, a Query.
    def smallest_free(frames_file: str) -> int:
        smallest = 0
        for free in range(9216, 0, -256):
            attempt = run(str(free), frames_file=frames_file)
            if not attempt["answered"]:
                assert attempt["stats"]["dropped"] == {"internal:MemoryError": 1}, attempt
                return smallest
            smallest = attempt["free_bytes"]
        return smallest

    scan_free = smallest_free("frames.bin")
    query_free = smallest_free("query.bin")
    print(f"smallest free heap answered in: trail scan {scan_free} bytes, "
          f"Query {query_free} bytes; audit_read loaded: {data['audit_read_bytes']} bytes; "
          f"scan of {data['trail_bytes']} bytes: median {sorted(data['scan_us'])[7]} us")
    # loaded as a board boots (tails first), the answer needs ~8 KB free (a Query ~3-4 KB): a
    # plain-TCP board at 64K keeps ~9.4 KB free while trading (etp bench firmware)
    assert 0 < query_free < scan_free <= SCAN_FREE_MAX
