"""Audit trail on flash: checksummed records in two rings of files, safe against torn writes.

One record per line: 8 hex digits of CRC-32 over the JSON text, a space, the JSON text, "\n".
Two retention classes share one sequence number `n`:
- trades (`k` "trade": what the node committed, price, energy, bidder, the confirm's id) go to
  the trade ring <dir>/trade.<i>, numbered up from 0: a full segment is closed and trade.<i+1>
  started, the oldest deleted once more than the ring's segment count exist (no renames). The
  ring is sized at boot from the flash left free (audit_boot.recover), so trades are kept for
  days where the rest keeps minutes;
- everything else (bids, rejected confirms, expiries, terminates, boots, faults) goes to the
  bid ring: the newest file is <dir>/audit.0; when it would pass max_bytes it becomes audit.1
  (and so on, keeping `files` files).
A write cut by power loss leaves a line without its newline or with a wrong checksum: readers
skip it and every earlier record stays intact; the next boot starts a fresh line so the
fragment cannot swallow the next record.
"""

import json
import os

from firmware.etp_node import unload
from shared_etp.compat import const, crc32

# the trade ring, a list: [oldest segment, newest segment, newest's bytes, segments kept]
_FIRST = const(0)
_LAST = const(1)
_SIZE = const(2)
_KEEP = const(3)


def encode_record(record):
    """One audit line for a record dict, as (head, text), both str: the line is head + text +
    "\n", head the CRC-32 of the JSON text in 8 hex digits and a space. AuditLog writes the
    parts as they are: no line-sized copy of the text (the CRC is taken over the str itself)."""
    text = json.dumps(record)
    return "%08x " % (crc32(text) & 0xFFFFFFFF), text


class AuditLog:
    """Append-only, checksummed, size-bounded log of bid decisions and trades."""

    def __init__(
        self, directory="audit", max_bytes=16384, files=4, clock=None, tail=None, trades=None
    ):
        """max_bytes: one file's (segment's) bound; files: the bid ring's files. tail: what
        audit_boot.recover() returned if it already ran (boot runs it before the node's code
        loads, sizing the trade ring from the free flash), else it runs here with a trade
        ring of `trades` segments (default: `files`)."""
        self.directory = directory
        self.max_bytes = max_bytes
        self.files = max(2, files)
        self.clock = clock
        self.appended = 0
        self.errors = 0
        try:
            os.mkdir(directory)
        except OSError:
            pass
        self.path = directory + "/audit.0"
        if tail is None:
            # Sizes and next sequence number from the rings' tails (a torn line is ended
            # there): boot code, loaded for this and dropped, as the node only appends after.
            from firmware.etp_node import audit_boot

            try:
                tail = audit_boot.recover(directory, None, trades or self.files)
            finally:
                unload("audit_boot")
                unload("audit_read")
        # size of audit.0, next sequence number, the trade ring [first, last, size, keep]
        self.size, self.next_n, self.trades = tail

    def _rotate(self):
        for index in range(self.files - 1, 0, -1):
            older = "%s/audit.%d" % (self.directory, index)
            newer = "%s/audit.%d" % (self.directory, index - 1)
            try:
                os.stat(newer)
            except OSError:
                continue  # not written yet
            try:
                os.remove(older)  # rename does not replace a file on every port's filesystem
            except OSError:
                pass
            os.rename(newer, older)
        self.size = 0

    def append(self, record):
        """Append a record (a dict of JSON values); adds its sequence number n and time t.

        True once the record is on flash; False if it could not be written (flash full or
        failing: counted in `errors`). A trade is committed only after True (core.py)."""
        record["n"] = self.next_n
        if self.clock is not None and "t" not in record:
            record["t"] = self.clock()
        head, text = encode_record(record)
        size = len(head) + len(text) + 1  # the JSON text is ASCII: characters are bytes
        ring = self.trades if record.get("k") == "trade" else None
        try:
            if ring is None:
                if self.size and self.size + size > self.max_bytes:
                    self._rotate()
                path = self.path
            else:
                if ring[_SIZE] and ring[_SIZE] + size > self.max_bytes:
                    # the next segment; the oldest go first (room on a full flash)
                    ring[_LAST] += 1
                    ring[_SIZE] = 0
                    while ring[_LAST] - ring[_FIRST] >= ring[_KEEP]:
                        try:
                            os.remove("%s/trade.%d" % (self.directory, ring[_FIRST]))
                        except OSError:
                            pass
                        ring[_FIRST] += 1
                path = "%s/trade.%d" % (self.directory, ring[_LAST])
            with open(path, "a") as handle:  # a cut anywhere leaves a torn line
                handle.write(head)
                handle.write(text)
                handle.write("\n")
            if ring is None:
                self.size += size
            else:
                ring[_SIZE] += size
            self.next_n += 1
            self.appended += 1
        except OSError:
            self.errors += 1  # flash full or failing: bids go on, trades wait, the count shows it
            return False
        return True
