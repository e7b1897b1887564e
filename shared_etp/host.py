"""CPython-only halves of compat and frame: hmac/clock wrappers and the cbor2 backend.

Boards never load this module (MicroPython has its own code paths in compat), so none of this
costs heap on a board.
"""

import binascii
import functools
import hmac as _hmac
import time

from shared_etp.errors import MALFORMED, TRUNCATED, ProtocolError

digests_equal = _hmac.compare_digest


def hmac_sha256(key, data):
    """HMAC-SHA256 (RFC 2104)."""
    return _hmac.digest(key, data, "sha256")


def crc32(data, value=0):
    """binascii.crc32 that also takes a str, as MicroPython's does (over its UTF-8 bytes)."""
    if isinstance(data, str):
        data = data.encode()
    return binascii.crc32(data, value)


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
    """(loads, dumps) over cbor2, or None when it is not installed. loads raises ProtocolError
    on bad input; dumps keeps a map's key order and writes the shortest integer heads, so a map
    with ascending integer keys comes out canonical (canonical=True would re-sort in Python)."""
    try:
        import cbor2
    except ImportError:
        return None
    cbor2_loads = cbor2.loads

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

    return loads, cbor2.dumps


def fast_codec(names, low, high, header_mask, required_mask, version, dumps):
    """(body_of, message_of): the common case of encoding and decoding on CPython in one pass
    each. Both return None for anything unusual, so the caller's full checks decide the exact
    error; they never accept what those checks would reject."""
    by_name = {name: (key, low[key], high[key]) for key, name in enumerate(names)}
    by_key = [(name, low[key], high[key]) for key, name in enumerate(names)]
    type_count = len(required_mask)

    def body_of(msg):
        if type(msg) is not dict:
            return None
        pairs = []
        present = 0
        for name, value in msg.items():
            spec = by_name.get(name)
            if spec is None or type(value) is not int:
                return None
            key, lo, hi = spec
            if value < lo or value > hi:
                return None
            pairs.append((key, value))
            present |= 1 << key
        if present & header_mask != header_mask or msg["v"] != version:
            return None
        if required_mask[msg["t"]] & ~present:
            return None
        pairs.sort()
        return dumps(dict(pairs))

    def message_of(raw, body):
        if type(raw) is not dict:
            return None
        msg = {}
        present = 0
        last = -1
        for key, value in raw.items():
            if type(key) is not int or key <= last or key >= len(by_key) or type(value) is not int:
                return None
            name, lo, hi = by_key[key]
            if value < lo or value > hi:
                return None
            msg[name] = value
            present |= 1 << key
            last = key
        if present & header_mask != header_mask or msg["v"] != version:
            return None
        t = msg["t"]
        if t >= type_count or required_mask[t] & ~present:
            return None
        if dumps(raw) != body:  # shortest heads, nothing trailing
            return None
        return msg

    return body_of, message_of


@functools.cache
def hub_codec():
    """(loads, body_of, message_of): cbor2's loads and fast_codec over the protocol's tables,
    built once; None when cbor2 is not installed."""
    native = native_cbor()
    if native is None:
        return None
    from shared_etp.fields import FIELD_HIGH, FIELD_LOW, FIELD_NAMES, HEADER_MASK, REQUIRED_MASK
    from shared_etp.schema import PROTOCOL_VERSION

    loads, dumps = native
    body_of, message_of = fast_codec(
        FIELD_NAMES, FIELD_LOW, FIELD_HIGH, HEADER_MASK, REQUIRED_MASK, PROTOCOL_VERSION, dumps
    )
    return loads, body_of, message_of


def cpython_frames(validate):
    """frame.py's CPython side: (key_of, parse_body). parse_body(body) returns the message dict
    of a frame body or raises ProtocolError, with the same checks and codes as the pure codec;
    it is None without cbor2 (the pure codec decodes then)."""
    from shared_etp.errors import UNKNOWN_FIELD, UNKNOWN_TYPE, WRONG_TYPE
    from shared_etp.fields import FIELD_NAMES, REQUIRED_MASK
    from shared_etp.names import FIELD_KEY

    codec = hub_codec()
    if codec is None:
        return FIELD_KEY.__getitem__, None
    from cbor2 import dumps  # present: hub_codec found it

    loads, _body_of, message_of = codec
    field_count = len(FIELD_NAMES)
    type_count = len(REQUIRED_MASK)

    def parse_body(body):
        raw = loads(body)
        msg = message_of(raw, body)
        if msg is not None:
            return msg
        # Something is off: these checks name it.
        if not isinstance(raw, dict):
            raise ProtocolError(WRONG_TYPE, "not a map")
        msg = {}
        for key, value in raw.items():
            if type(key) is not int:
                raise ProtocolError(WRONG_TYPE, "key type")
            if key < 0 or key >= field_count:
                raise ProtocolError(UNKNOWN_FIELD, "key %d" % key)
            msg[FIELD_NAMES[key]] = value
        t = msg.get("t")
        if type(t) is int and (t < 0 or t >= type_count):
            raise ProtocolError(UNKNOWN_TYPE, "t=%d" % t)
        validate(msg)
        # Keys in order, then a re-encoding (in that order) equal to the bytes received: together
        # these reject unsorted or duplicate keys and longer-than-necessary heads.
        keys = list(raw)
        try:
            canonical = keys == sorted(keys) and dumps(raw) == body
        except Exception:
            canonical = False
        if not canonical:
            raise ProtocolError(MALFORMED, "not canon")
        return msg

    return FIELD_KEY.__getitem__, parse_body
