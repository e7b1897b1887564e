"""CPython-only halves of compat and frame: hmac/clock wrappers and the cbor2 backend.

Boards never load this module (MicroPython has its own code paths in compat), so none of this
costs heap on a board.
"""

import hmac as _hmac
import time

from shared_etp.errors import MALFORMED, TRUNCATED, ProtocolError

digests_equal = _hmac.compare_digest


def hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104)."""
    return _hmac.digest(key, data, "sha256")


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
    """(dumps, loads) over cbor2 giving canonical bytes and ProtocolError on bad input; or None
    when cbor2 is not installed."""
    try:
        import cbor2
    except ImportError:
        return None
    cbor2_loads = cbor2.loads

    def dumps(value):
        # cbor2 always writes the shortest integer heads and keeps dict order, so a map whose
        # integer keys are inserted in ascending order comes out deterministic; this is ~5x
        # faster than canonical=True, which re-sorts in Python.
        if isinstance(value, dict):
            value = dict(sorted(value.items()))
        return cbor2.dumps(value)

    def loads(data):
        try:
            return cbor2_loads(data)
        except ProtocolError:
            raise
        except EOFError:
            raise ProtocolError(TRUNCATED, "CBOR item runs past the end of the frame") from None
        except Exception as exc:  # cbor2 raises many kinds on hostile input
            if "premature end" in str(exc) or "EOF" in type(exc).__name__:
                raise ProtocolError(TRUNCATED, "CBOR item runs past the end of the frame") from None
            raise ProtocolError(MALFORMED, "not well-formed CBOR") from None

    return dumps, loads
