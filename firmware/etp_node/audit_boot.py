"""Boot code of the audit trail: each ring's tail (the next sequence number; a torn last line
is ended) and the trade ring's size from the flash left free. Loaded at boot (boot.py, or
AuditLog when no tail was read before it) with audit_read, and dropped with it.
"""

import os

from firmware.etp_node.audit_read import decode_line


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


def trade_ids(directory):
    """(oldest, newest) trade ring segment numbers in directory; (0, 0) if it has none."""
    first = last = -1
    try:
        names = os.ilistdir(directory) if hasattr(os, "ilistdir") else os.listdir(directory)
    except OSError:  # no directory yet (first boot)
        return 0, 0
    for entry in names:
        name = entry if isinstance(entry, str) else entry[0]
        if name.startswith("trade"):
            try:
                index = int(name[6:])
            except ValueError:
                continue
            if first < 0 or index < first:
                first = index
            if index > last:
                last = index
    return (first, last) if first >= 0 else (0, 0)


def trade_segments(size, config):
    """Segments of the trade ring for `size` bytes of flash (what is free plus what the trail
    already holds, so the figure stays put as the trail fills): `audit_flash_pct` % of it, at
    most `audit_max_kb` KB for the whole trail, less the bid ring's `audit_files` segments of
    `audit_file_bytes`; at least 2."""
    size = min(size * config["audit_flash_pct"] // 100, config["audit_max_kb"] * 1024)
    return max(2, size // config["audit_file_bytes"] - config["audit_files"])


def recover(directory, config=None, keep=4):
    """(size of audit.0, next sequence number, trade ring [oldest, newest, newest's bytes,
    segments kept]) at boot; ends a torn last line in either ring so appends stay clean.
    Reads only the tail of each ring's newest file (a record is far shorter than 512 bytes), so
    booting costs no heap for a full log. With the node's config the trade ring keeps
    `audit_trade_files` segments, or when that is 0 as many as trade_segments() gives for the
    flash os.statvfs finds free (`keep` without the config or statvfs)."""
    first, last = trade_ids(directory)
    out = [0, -1, 0]  # size of audit.0, the last n, size of the newest trade segment
    for index in (0, 2):
        path = directory + "/audit.0" if index == 0 else "%s/trade.%d" % (directory, last)
        size, tail = _tail(path)
        if not size:  # just rotated, or never written: the n is in the file before
            tail = _tail(
                directory + "/audit.1" if index == 0 else "%s/trade.%d" % (directory, last - 1)
            )[1]
        for line in reversed(tail.split(b"\n")):
            record = decode_line(line)  # the first piece may be cut by the seek: it fails
            if record is not None:
                out[1] = max(out[1], record.get("n", -1))
                break
        if size and not tail.endswith(b"\n"):  # torn by a power cut: end it
            with open(path, "ab") as handle:
                handle.write(b"\n")
            size += 1
        out[index] = size
    if config is not None:
        keep = config["audit_trade_files"]
        if not keep:
            try:
                os.mkdir(directory)  # first boot: statvfs needs it
            except OSError:
                pass
            try:
                stat = os.statvfs(directory)  # bytes free: blocks free to a user x their size
                size = (last - first) * config["audit_file_bytes"] + out[0] + out[2]
                for index in range(1, config["audit_files"]):
                    try:
                        size += os.stat("%s/audit.%d" % (directory, index))[6]
                    except OSError:
                        pass  # not written yet
                keep = trade_segments(stat[4] * stat[1] + size, config)
            except (AttributeError, OSError):
                keep = config["audit_files"]  # a port without statvfs
    return out[0], out[1] + 1, [first, last, out[2], keep]
