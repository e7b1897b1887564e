"""Reading an audit trail back: every record of every kept file (host tools and tests), and
the tail at boot (the board loads this module for that only, then drops it: it only appends).
"""

import json
import os
from binascii import crc32


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



def parse_log(data):
    """(records, torn) from the bytes of one audit file; torn counts skipped lines."""
    records = []
    torn = 0
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last "\n": empty unless the final write was cut
    if tail:
        torn += 1
    for line in lines:
        if not line:
            continue
        record = decode_line(line)
        if record is None:
            torn += 1
        else:
            records.append(record)
    return records, torn


def read_all(directory="audit", files=4):
    """(records oldest first, torn count) across every kept file audit.<files-1> .. audit.0."""
    records = []
    torn = 0
    for index in range(files - 1, -1, -1):
        try:
            with open("%s/audit.%d" % (directory, index), "rb") as handle:
                part, bad = parse_log(handle.read())
        except OSError:
            continue
        records.extend(part)
        torn += bad
    return records, torn
