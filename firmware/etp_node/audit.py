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


def encode_record(record):
    """The bytes of one audit line for a record dict."""
    text = json.dumps(record).encode()
    return b"%08x " % (crc32(text) & 0xFFFFFFFF) + text + b"\n"


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


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class AuditLog:
    """Append-only, checksummed, size-bounded log of bid decisions and trades."""

    def __init__(self, directory="audit", max_bytes=16384, files=4, clock=None):
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
        self.size = 0
        self.next_n = 0
        self._recover()

    def _recover(self):
        """Find the size and last sequence number; end a torn line so appends stay clean.

        Reads only the tail of the newest file (a record is far shorter than 512 bytes), so
        booting costs no heap for a full log.
        """
        self.size, tail = _tail(self.path)
        last = tail if self.size else _tail(self.directory + "/audit.1")[1]
        for line in reversed(last.split(b"\n")):
            record = decode_line(line)  # the first piece may be cut by the seek: it fails
            if record is not None:
                self.next_n = record.get("n", -1) + 1
                break
        if tail and not tail.endswith(b"\n"):
            with open(self.path, "ab") as handle:
                handle.write(b"\n")
            self.size += 1

    def _rotate(self):
        for index in range(self.files - 1, 0, -1):
            older = "%s/audit.%d" % (self.directory, index)
            newer = "%s/audit.%d" % (self.directory, index - 1)
            if _exists(newer):
                if _exists(older):
                    os.remove(older)
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
