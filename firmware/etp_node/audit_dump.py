"""Every record of an audit trail, read back: for host tools, tests and `mpremote exec` on a
board; the node itself never loads this (what it reads of its trail: audit_read.py).
"""

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
