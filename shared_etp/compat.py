"""The one place where MicroPython and CPython differ: const, HMAC, clocks (CPython: host.py)."""

import hashlib
import sys
import time

IS_MICROPYTHON = sys.implementation.name == "micropython"

try:
    from micropython import const  # type: ignore[import-not-found]
except ImportError:  # CPython

    def const(value):  # type: ignore[no-redef]
        """Identity stand-in for MicroPython's compile-time constant marker."""
        return value


_BLOCK_SIZE = const(64)

if IS_MICROPYTHON:
    # Every function object costs a board ~150 bytes of heap: the clocks are the port's own
    # functions, and the HMAC is one function.
    ticks_ms = time.ticks_ms  # type: ignore[attr-defined]  # monotonic ms, for durations
    ticks_diff = time.ticks_diff  # type: ignore[attr-defined]  # ms from start to end, wrap-safe
    # CRC-32 of bytes or of a str as it is (no bytes copy of an audit line to checksum it)
    from binascii import crc32

    # key -> (inner pad, outer pad): a board has two keys, each padded once
    _PADS = {}  # type: dict[bytes, tuple[bytes, bytes]]

    def hmac_sha256(key, data):
        """HMAC-SHA256 (RFC 2104) over hashlib.sha256; MicroPython has no hmac module."""
        pads = _PADS.get(key)
        if pads is None:
            padded = hashlib.sha256(key).digest() if len(key) > _BLOCK_SIZE else key
            padded += bytes(_BLOCK_SIZE - len(padded))
            pads = (bytes(byte ^ 0x36 for byte in padded), bytes(byte ^ 0x5C for byte in padded))
            if len(_PADS) < 4:  # bounded: tools that try many keys pad them each time
                _PADS[key] = pads
        inner = hashlib.sha256(pads[0])
        inner.update(data)
        digest = inner.digest()
        del inner  # garbage before the outer hash object is made: one at a time in the heap
        outer = hashlib.sha256(pads[1])
        outer.update(digest)
        return outer.digest()

    def digests_equal(a, b):
        """Compare two byte strings in time independent of where they differ."""
        if len(a) != len(b):
            return False
        diff = 0
        for x, y in zip(a, b):
            diff |= x ^ y
        return diff == 0

    # Ports built with a 2000 epoch report time.time() relative to 2000-01-01.
    _EPOCH_OFFSET_MS = 946684800000 if time.gmtime(0)[0] == 2000 else 0

    def now_ms():
        """Wall-clock milliseconds since the Unix epoch."""
        if hasattr(time, "time_ns"):
            return time.time_ns() // 1000000 + _EPOCH_OFFSET_MS
        return int(time.time()) * 1000 + _EPOCH_OFFSET_MS

else:  # CPython
    from shared_etp.host import (  # noqa: F401
        crc32,
        digests_equal,
        hmac_sha256,
        now_ms,
        ticks_diff,
        ticks_ms,
    )
