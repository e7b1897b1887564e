"""Benchmark run ON the MicroPython unix port: a Terminate answered from a full audit trail
(a full bid ring, a trade ring of older trades beside it).

Usage: micropython -X heapsize=64K bench_trail_scan.py FRAMES_FILE CONFIG_JSON AUDIT_DIR [FREE]
FRAMES_FILE holds records of [2 bytes length][frame]: Terminates with `auc` for auctions the
node's RAM does not know (so each is answered from the trail on flash, every file scanned),
written by tests/firmware/test_fw_trail_scan.py with the trail. The node's code is loaded as a
board loads it. Prints a line per answer (its frame in hex), then one JSON line: the time per
answer and the heap the scanning code takes while loaded; with FREE, whether the first frame
is still answered with only FREE bytes of heap left free.
"""

import gc
import sys

if sys.path[0][:1] == "/":  # as main.py: import from the working directory (the flash)
    sys.path[0] = ""
gc.collect()

# As boot.py does: the trail's tails first (its boot code dropped), then the node's code.
from firmware.etp_node import audit_boot  # noqa: E402

AUDIT_TAIL = audit_boot.recover(sys.argv[3], None, 64)
del audit_boot
from firmware.etp_node import unload  # noqa: E402

unload("audit_boot")
unload("audit_read")
gc.collect()
from firmware.etp_node.boot import load_code  # noqa: E402

load_code(("json", "time", "firmware.etp_node.audit", "firmware.etp_node.battery",
           "firmware.etp_node.core", "firmware.etp_node.node"))
del load_code
unload("boot")
gc.collect()

import json  # noqa: E402
import time  # noqa: E402

from firmware.etp_node.audit import AuditLog  # noqa: E402
from firmware.etp_node.battery import SimBattery  # noqa: E402
from firmware.etp_node.core import NodeCore  # noqa: E402


def main():
    """Answer every Terminate in the file: timed, then with the heap cut down step by step."""
    frames_path, config_path, audit_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(config_path) as handle:
        config = json.loads(handle.read())
    text = config["key"]
    key = bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))
    config["key"] = key
    audit = AuditLog(audit_dir, 16384, 4, None, AUDIT_TAIL)
    core = NodeCore(config, SimBattery(10000, 10000), audit)
    config = None
    frames = []
    with open(frames_path, "rb") as handle:
        while True:
            head = handle.read(2)
            if len(head) < 2:
                break
            frames.append(handle.read(head[0] << 8 | head[1]))
    topic = core.topic_req
    gc.collect()
    live = gc.mem_alloc()
    if len(sys.argv) > 4:
        # One answer with only FREE bytes of the heap left free: the rest taken in small
        # blocks (they fill the holes first, as the node's data does), chained in pairs.
        free_bytes = int(sys.argv[4])
        frames = frames[:1]
        gc.collect()
        held = None
        while gc.mem_free() > free_bytes + 160:
            try:
                held = (held, bytearray(96))
            except MemoryError:
                break
        gc.collect()
        free_now = gc.mem_free()
        answered = bool(core.handle(topic, frames[0]))
        held = None
        gc.collect()
        out = {"free_bytes": free_now, "answered": answered, "stats": core.stats}
    else:
        # Every answer timed, the collector on as on a board; what a scan leaves behind.
        times_us = []
        for frame in frames:
            gc.collect()
            start = time.ticks_us()
            replies = core.handle(topic, frame)
            times_us.append(time.ticks_diff(time.ticks_us(), start))
            # the answer's frame as hex (the test decodes it), "-" if there was none; printed
            # at once, so the harness keeps nothing on the heap the node needs
            sys.stdout.write("answer %s\n" % (replies[0][1].hex() if replies else "-"))
            replies = None
        gc.collect()
        # the scanning code's own heap while it is loaded (core loads it, then drops it)
        before = gc.mem_alloc()
        from firmware.etp_node import audit_read

        gc.collect()
        module_bytes = gc.mem_alloc() - before
        del audit_read
        unload("audit_read")
        gc.collect()
        out = {
            "scan_us": times_us,
            "audit_read_bytes": module_bytes,
            "live_before_bytes": live,
            "live_after_bytes": gc.mem_alloc(),
            "heap_total_bytes": gc.mem_alloc() + gc.mem_free(),
            "trail_bytes": sum(trail_sizes(audit_dir)),
            "stats": core.stats,
        }
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")


def trail_sizes(directory):
    """Sizes of the trail's files, both rings."""
    import os

    return [os.stat("%s/%s" % (directory, name))[6] for name in os.listdir(directory)
            if name.startswith("audit.") or name.startswith("trade.")]


main()
