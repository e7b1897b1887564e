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
    _IPAD = bytes(0x36 for _ in range(_BLOCK_SIZE))
    _OPAD = bytes(0x5C for _ in range(_BLOCK_SIZE))

    def _xor_pad(key, pad):
        return bytes(k ^ p for k, p in zip(key, pad))

    def _padded_key(key):
        if len(key) > _BLOCK_SIZE:
            key = hashlib.sha256(key).digest()
        return key + bytes(_BLOCK_SIZE - len(key))

    def hmac_sha256(key, data):
        """HMAC-SHA256 (RFC 2104) over hashlib.sha256; MicroPython has no hmac module."""
        padded = _padded_key(key)
        inner = hashlib.sha256(_xor_pad(padded, _IPAD))
        inner.update(data)
        outer = hashlib.sha256(_xor_pad(padded, _OPAD))
        outer.update(inner.digest())
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
    _EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0

    def now_ms():
        """Wall-clock milliseconds since the Unix epoch."""
        if hasattr(time, "time_ns"):
            return time.time_ns() // 1000000 + _EPOCH_OFFSET_S * 1000
        return (int(time.time()) + _EPOCH_OFFSET_S) * 1000

    def ticks_ms():
        """Monotonic milliseconds, for measuring durations."""
        return time.ticks_ms()  # type: ignore[attr-defined]

    def ticks_diff(end, start):
        """Milliseconds from start to end, wrap-safe."""
        return time.ticks_diff(end, start)  # type: ignore[attr-defined]

else:  # CPython
    from shared_etp.host import (  # noqa: F401
        digests_equal,
        hmac_sha256,
        native_cbor,
        now_ms,
        ticks_diff,
        ticks_ms,
    )
