"""Benchmark run ON the MicroPython unix port: heap use and per-message handling time.

Usage: micropython -X heapsize=64K bench_node.py FRAMES_FILE CONFIG_JSON AUDIT_DIR PER_TYPE
FRAMES_FILE holds records of [1 byte message type][2 bytes length][frame], requests to the
device (Query/Bid/BidConfirm) written by `etp bench firmware`. Prints one JSON line.
"""

import gc
import sys
from array import array

_SAMPLES = 128  # handling times kept per message type (the latest ones)
_TIMED_TYPES = (1, 3, 5)  # Query, Bid, BidConfirm

# The harness's own memory first, while the heap is empty: handling times (us, uint16: a frame
# takes well under 65 ms) in preallocated arrays, so it never competes with the node for
# contiguous space.
PER_TYPE = min(int(sys.argv[4]), _SAMPLES)
if sys.path[0][:1] == "/":  # as main.py: import from the working directory (the flash)
    sys.path[0] = ""
TIMES = {kind: array("H", bytes(2 * PER_TYPE)) for kind in _TIMED_TYPES}
gc.collect()
HEAP_START = gc.mem_alloc()

# Loaded as boot.py does: the audit log's tail first, then the code above a held block,
# freed before the node's data is made.
from firmware.etp_node import audit_boot  # noqa: E402

AUDIT_TAIL = audit_boot.recover(sys.argv[3])
del audit_boot
from firmware.etp_node import unload  # noqa: E402

unload("audit_boot")
unload("audit_read")
from firmware.etp_node.boot import load_code  # noqa: E402

load_code(("json", "time", "firmware.etp_node.audit", "firmware.etp_node.battery",
           "firmware.etp_node.core", "firmware.etp_node.mqtt", "firmware.etp_node.node"))
del load_code
unload("boot")  # as main.py drops it (its interned names stay, counted)
del unload
gc.collect()
HEAP_CODE = gc.mem_alloc() - HEAP_START

import json  # noqa: E402
import time  # noqa: E402

from firmware.etp_node.audit import AuditLog  # noqa: E402
from firmware.etp_node.battery import SimBattery  # noqa: E402
from firmware.etp_node.core import NodeCore  # noqa: E402


def shell_sort(values, n):
    """Sort values[:n] in place."""
    gap = n // 2
    while gap:
        for i in range(gap, n):
            item = values[i]
            j = i
            while j >= gap and values[j - gap] > item:
                values[j] = values[j - gap]
                j -= gap
            values[j] = item
        gap //= 2


def main():
    """Boot a NodeCore like the board does, feed it the frames, print the measurements."""
    frames_path, config_path, audit_dir = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(config_path) as handle:
        config = json.loads(handle.read())
    for name in ("key", "notice_key"):
        text = config[name]
        config[name] = bytes(int(text[i : i + 2], 16) for i in range(0, len(text), 2))
    battery = SimBattery(config["capacity_wh"], 10000)
    core = NodeCore(config, battery, AuditLog(audit_dir, 16384, 4, None, AUDIT_TAIL))
    config = None  # consumed: the node keeps no config dict either
    handle = open(frames_path, "rb")  # noqa: SIM115 - read record by record below
    topic = core.topic_req
    per_type = PER_TYPE
    times = TIMES  # message type -> array of handling times
    counts = {}
    for kind in _TIMED_TYPES:
        counts[kind] = 0
    dropped = 0
    gc.collect()
    while True:
        head = handle.read(3)
        if len(head) < 3:
            break
        kind = head[0]
        frame = handle.read(head[1] << 8 | head[2])
        start = time.ticks_us()
        replies = core.handle(topic, frame)
        spent = time.ticks_diff(time.ticks_us(), start)
        if kind in times:  # a ring: the latest per_type samples (steady state) are kept
            times[kind][counts[kind] % per_type] = min(spent, 65535)
            counts[kind] += 1
        if not replies:
            dropped += 1
        replies = frame = None
        gc.collect()  # as the node does after each burst of frames (untimed here)
    handle.close()
    gc.collect()
    out = {
        "heap_code_bytes": HEAP_CODE,
        "heap_live_after_bytes": gc.mem_alloc() - HEAP_START,
        "heap_total_bytes": gc.mem_alloc() + gc.mem_free(),
        "stats": core.stats,
        "dropped": dropped,
        "times_us": {},
    }
    for kind, values in times.items():
        n = min(counts[kind], per_type)
        if not n:
            continue
        shell_sort(values, n)  # in place: the heap has no room for sorted copies
        out["times_us"][str(kind)] = {
            "n": n,
            "median": values[n // 2],
            "p99": values[min(n - 1, n * 99 // 100)],
            "max": values[n - 1],
        }
    json.dump(out, sys.stdout)  # streamed: no result-sized string on the heap
    sys.stdout.write("\n")


main()
