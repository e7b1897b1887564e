"""Every record of an audit trail, read back: for host tools, tests and `mpremote exec` on a
board; the node itself never loads this (what it reads of its trail: audit_read.py).
"""

from firmware.etp_node.audit_boot import trade_ids
from firmware.etp_node.audit_read import decode_line


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


def trail_files(directory="audit", files=4):
    """Names of the trail's files, each ring oldest first: the bid ring audit.<files-1> ..
    audit.0 (those present), then the trade ring trade.<oldest> .. trade.<newest>."""
    import os

    names = []
    for index in range(files - 1, -1, -1):
        name = "audit.%d" % index
        try:
            os.stat("%s/%s" % (directory, name))
        except OSError:
            continue
        names.append(name)
    first, last = trade_ids(directory)
    for index in range(first, last + 1):
        name = "trade.%d" % index
        try:
            os.stat("%s/%s" % (directory, name))
        except OSError:
            continue
        names.append(name)
    return names


def read_all(directory="audit", files=4):
    """(records oldest first, torn count) across both rings: every record of the bid ring's
    files and the trade ring's segments, in sequence-number order."""
    records = []
    torn = 0
    for name in trail_files(directory, files):
        with open("%s/%s" % (directory, name), "rb") as handle:
            part, bad = parse_log(handle.read())
        records.extend(part)
        torn += bad
    records.sort(key=_number)
    return records, torn


def _number(record):
    return record.get("n", -1)
