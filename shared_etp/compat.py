"""The one place where MicroPython and CPython differ: const, HMAC, clocks, CBOR backend."""

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

else:
    import hmac as _hmac

    def hmac_sha256(key, data):
        """HMAC-SHA256 (RFC 2104)."""
        return _hmac.digest(key, data, "sha256")

    digests_equal = _hmac.compare_digest

    def now_ms():
        """Wall-clock milliseconds since the Unix epoch."""
        return time.time_ns() // 1_000_000

    def ticks_ms():
        """Monotonic milliseconds, for measuring durations."""
        return time.monotonic_ns() // 1_000_000

    def ticks_diff(end, start):
        """Milliseconds from start to end."""
        return end - start


def native_cbor():
    """Return (dumps, loads) of a native CBOR library giving canonical bytes, or None.

    On CPython this is cbor2 (its C extension when built); MicroPython has none installable,
    so the pure codec in shared_etp.cbor is used there.
    """
    if IS_MICROPYTHON:
        return None
    try:
        import cbor2
    except ImportError:
        return None

    def dumps(value):
        # cbor2 always writes the shortest integer heads and keeps dict order, so a map whose
        # integer keys are inserted in ascending order comes out deterministic; this is ~5x
        # faster than canonical=True, which re-sorts in Python.
        if isinstance(value, dict):
            value = dict(sorted(value.items()))
        return cbor2.dumps(value)

    return dumps, cbor2.loads
