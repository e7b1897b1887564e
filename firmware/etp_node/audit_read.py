"""What the node reads of its own audit trail: what became of an auction (decide: a
Terminate's question, answered from RAM or from the trail on flash), and a line's record
(decode_line; boot reads the rings' tails with it: audit_boot.py). The board loads this module
for those only, then drops it. Every record read back (host tools, tests): audit_dump.py.
"""

import json
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
    audit = core.audit
    directory = getattr(audit, "directory", None)
    if directory is None:  # no trail on flash: nothing to answer from
        return _REASON_UNKNOWN_AUCTION, 0, 0
    return committed(directory, audit.files, auction, asker, getattr(audit, "trades", None))


def _scan(path, auction, asker, seen):
    """Fold the records of `auction` in one file into seen = [trade record, accepted (1:
    another bidder's bid was accepted, 2: the asker's), the asker's hold expired, n of the
    auction's first record, the needle its lines hold, True to have the n of the file's first
    record]. Returns that n (else, and for a missing file, None). Streams the file line by line
    (never a whole file in RAM) and decodes only lines that name the auction."""
    try:
        handle = open(path, "rb")  # noqa: SIM115
    except OSError:
        return None  # not written yet (a read error below is raised: no answer is a guess)
    first = seen[5]
    needle = seen[4]
    try:
        while True:
            line = handle.readline()
            if not line:
                break
            if first is True:
                record = decode_line(line.rstrip(b"\n"))
                first = None if record is None else record.get("n", -1)
            if needle not in line:
                continue
            record = decode_line(line.rstrip(b"\n"))
            if record is None or record.get("auc") != auction:
                continue  # torn, or another auction whose number starts with this one
            if seen[3] is None:
                seen[3] = record.get("n", -1)
            kind = record.get("k")
            if kind == "trade":
                seen[0] = record
            elif kind == "bid" and record.get("r") == _REASON_NONE:
                if record.get("b") == asker:
                    seen[1] = 2
                elif not seen[1]:
                    seen[1] = 1
            elif kind == "expire" and record.get("b") == asker:
                seen[2] = True
    finally:
        handle.close()
    return None if first is True else first


def committed(directory, files, auction, asker, trades=None):
    """Whether the trail shows `auction` committed to `asker`: (_REASON_NONE, price_mc,
    energy_wh) of its trade record if so, else (reason, 0, 0): not_holder (the trade, or every
    accepted bid, was another bidder's), hold_expired or auction_closed (the asker's accepted
    bid was released without a trade), unknown_auction (no accepted bid of the auction left in
    the trail: nothing can be said).

    Only an accepted bid's record makes "no trade record" conclusive: a trade always follows
    an accepted bid in the append-only trail (n grows), bid files rotate out oldest first and
    the trade ring keeps longer, so while the bid's record is kept a trade's would be too.
    Reads the bid ring (audit.<files-1> .. audit.0), then the trade ring (`trades`, AuditLog's
    [oldest, newest, ...]) newest segment first, back to the one holding the auction's first
    record in the bid ring (only the newest one if it has none): a trade whose bids rotated
    out is not looked for (`etp firmware audit --auction` finds it), so an answer reads about
    as much as the bid ring holds, whatever the trade ring keeps. (Two functions, not one:
    loaded at a Terminate into a fragmented heap, two small blocks of code fit where one
    large one does not.)
    """
    seen = [None, 0, False, None, b'"auc": %d' % auction, False]  # type: list
    for index in range(files - 1, -1, -1):  # oldest first
        _scan("%s/audit.%d" % (directory, index), auction, asker, seen)
    if trades is not None:
        since = 0x3FFFFFFF if seen[3] is None else seen[3]
        seen[5] = True
        index = trades[1]
        while seen[0] is None and index >= trades[0]:
            first = _scan("%s/trade.%d" % (directory, index), auction, asker, seen)
            if first is not None and first < since:
                break  # the segments before this one are older than the auction's records
            index -= 1
    trade = seen[0]
    if trade is not None:
        if trade.get("b") == asker:
            return _REASON_NONE, trade.get("p"), trade.get("e")
        return _REASON_NOT_HOLDER, 0, 0
    if seen[1] == 2:
        return _REASON_HOLD_EXPIRED if seen[2] else _REASON_AUCTION_CLOSED, 0, 0
    return _REASON_NOT_HOLDER if seen[1] else _REASON_UNKNOWN_AUCTION, 0, 0
