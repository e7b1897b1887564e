"""Audit trail on flash: checksummed records in rotating files, safe against torn writes.

One record per line: 8 hex digits of CRC-32 over the JSON text, a space, the JSON text, "\n".
The newest file is <dir>/audit.0; when it would pass max_bytes it becomes audit.1 (and so on,
keeping `files` files). A write cut by power loss leaves a line without its newline or with a
wrong checksum: readers skip it and every earlier record stays intact; the next boot starts a
fresh line so the fragment cannot swallow the next record.
"""

import json
import os
from binascii import crc32

from firmware.etp_node import unload


def encode_record(record):
    """The bytes of one audit line for a record dict."""
    text = json.dumps(record).encode()
    return b"%08x " % (crc32(text) & 0xFFFFFFFF) + text + b"\n"


class AuditLog:
    """Append-only, checksummed, size-bounded log of bid decisions and trades."""

    def __init__(self, directory="audit", max_bytes=16384, files=4, clock=None, tail=None):
        """tail: (size of audit.0, next sequence number) if audit_read.recover() already ran
        (boot runs it before the node's code loads), else it runs here."""
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
            # Size and next sequence number from the log's tail (a torn line is ended there):
            # boot code, loaded for this and dropped, as the node only appends afterwards.
            from firmware.etp_node import audit_read

            try:
                tail = audit_read.recover(directory)
            finally:
                unload("audit_read")
        self.size, self.next_n = tail

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
        """Append a record (a dict of JSON values); adds its sequence number n and time t."""
        record["n"] = self.next_n
        if self.clock is not None and "t" not in record:
            record["t"] = self.clock()
        line = encode_record(record)
        try:
            if self.size and self.size + len(line) > self.max_bytes:
                self._rotate()
            with open(self.path, "ab") as handle:
                handle.write(line)
            self.size += len(line)
            self.next_n += 1
            self.appended += 1
        except OSError:
            self.errors += 1  # flash full or failing: trading goes on, the count shows it
