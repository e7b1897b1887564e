"""What the node reads of its own audit trail: the log's tail at boot (recover), and what
became of an auction (decide: a Terminate's question, answered from RAM or from the trail on
flash). The board loads this module for those only, then drops it. Every record read back
(host tools, tests): audit_dump.py.
"""

import json
import os
from binascii import crc32

from shared_etp.compat import const

# reason codes (shared_etp.schema) of a trail's answer, private so they cost no heap
_REASON_NONE = const(0)
_REASON_AUCTION_CLOSED = const(5)
_REASON_UNKNOWN_AUCTION = const(6)
_REASON_HOLD_EXPIRED = const(7)
_REASON_NOT_HOLDER = const(14)


def decode_line(line):
    """The record dict of one complete audit line (without "\\n"), or None if it is torn/bad."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    text = line[9:]
    try:
        if int(line[:8], 16) != crc32(text) & 0xFFFFFFFF:
            return None
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _tail(path):
    """(size, last <= 512 bytes) of a file; (0, b"") if it is missing."""
    try:
        size = os.stat(path)[6]
        with open(path, "rb") as handle:
            if size > 512:
                handle.seek(size - 512)
            return size, handle.read()
    except OSError:
        return 0, b""


def recover(directory):
    """(size of audit.0, next sequence number) at boot; ends a torn last line so appends stay
    clean. Reads only the tail of the newest file (a record is far shorter than 512 bytes), so
    booting costs no heap for a full log."""
    path = directory + "/audit.0"
    size, tail = _tail(path)
    last = tail if size else _tail(directory + "/audit.1")[1]
    next_n = 0
    for line in reversed(last.split(b"\n")):
        record = decode_line(line)  # the first piece may be cut by the seek: it fails
        if record is not None:
            next_n = record.get("n", -1) + 1
            break
    if tail and not tail.endswith(b"\n"):
        with open(path, "ab") as handle:
            handle.write(b"\n")
        size += 1
    return size, next_n


def decide(core, auction, asker):
    """What became of `auction` on the node `core`, for `asker` (a Terminate's sender; see
    shared_etp/README.md, "The trading flow", step 5): (_REASON_NONE, price_mc, energy_wh) of
    the trade if the node committed it to asker, else (reason, 0, 0). Decided from, in order:
    a live hold (not committed: the Terminate releases it), the ring of recent releases, the
    audit trail on flash. Here, not in core.py: loaded for such a Terminate and dropped again
    (they are rare, and a board's heap has no room to keep this code)."""
    hold = core.ledger.holds.get(auction)
    if hold is not None:
        return (_REASON_AUCTION_CLOSED if hold[0] == asker else _REASON_NOT_HOLDER), 0, 0
    released = core.ledger.find(auction)  # (auction, bidder, why, price, energy)
    if released is not None:
        if released[1] != asker:
            return _REASON_NOT_HOLDER, 0, 0
        if released[2] == "confirmed":
            return _REASON_NONE, released[3], released[4]
        if released[2] == "expired":
            return _REASON_HOLD_EXPIRED, 0, 0
        return _REASON_AUCTION_CLOSED, 0, 0
    directory = getattr(core.audit, "directory", None)
    if directory is None:  # no trail on flash: nothing to answer from
        return _REASON_UNKNOWN_AUCTION, 0, 0
    return committed(directory, core.audit.files, auction, asker)


def committed(directory, files, auction, asker):
    """Whether the trail shows `auction` committed to `asker`: (_REASON_NONE, price_mc,
    energy_wh) of its trade record if so, else (reason, 0, 0): not_holder (the trade, or every
    accepted bid, was another bidder's), hold_expired or auction_closed (the asker's accepted
    bid was released without a trade), unknown_auction (no accepted bid of the auction left in
    the trail: nothing can be said).

    Only an accepted bid's record makes "no trade record" conclusive: a trade always follows
    an accepted bid in the append-only trail and files rotate out oldest first, so while the
    bid's record is kept a trade's would be too. Streams the files line by line (never a whole
    file in RAM) and decodes only lines that name the auction.
    """
    needle = b'"auc": %d' % auction
    trade = None
    accepted = 0  # 1: another bidder's bid was accepted in the auction; 2: the asker's was
    expired = False
    for index in range(files - 1, -1, -1):  # oldest first: the last trade record wins
        try:
            handle = open("%s/audit.%d" % (directory, index), "rb")  # noqa: SIM115
        except OSError:
            continue  # not written yet (a read error below is raised: no answer is a guess)
        try:
            while True:
                line = handle.readline()
                if not line:
                    break
                if needle not in line:
                    continue
                record = decode_line(line.rstrip(b"\n"))
                if record is None or record.get("auc") != auction:
                    continue  # torn, or another auction whose number starts with this one
                kind = record.get("k")
                if kind == "trade":
                    trade = record
                elif kind == "bid" and record.get("r") == _REASON_NONE:
                    if record.get("b") == asker:
                        accepted = 2
                    elif not accepted:
                        accepted = 1
                elif kind == "expire" and record.get("b") == asker:
                    expired = True
        finally:
            handle.close()
    if trade is not None:
        if trade.get("b") == asker:
            return _REASON_NONE, trade.get("p"), trade.get("e")
        return _REASON_NOT_HOLDER, 0, 0
    if accepted == 2:
        return _REASON_HOLD_EXPIRED if expired else _REASON_AUCTION_CLOSED, 0, 0
    return _REASON_NOT_HOLDER if accepted else _REASON_UNKNOWN_AUCTION, 0, 0
