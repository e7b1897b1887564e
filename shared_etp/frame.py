"""Frames: a canonical CBOR map of integer fields followed by its HMAC-SHA256 tag.

    frame = body || HMAC-SHA256(key[kid], body)      (tag: the last 32 bytes)

Messages are dicts of field name -> int (see schema.FIELDS). Encoding validates first; decoding
checks size, CBOR well-formedness and canonical form, field types and ranges, the key and the
tag (over the body bytes as received, compared in constant time). Sender and Receiver add the
header bookkeeping, freshness (TTL) and replay protection both sides share.
"""

from shared_etp import cbor as _pure_cbor
from shared_etp import errors as _E  # codes by attribute: one global, strings shared
from shared_etp.cbor import _head as _cbor_head
from shared_etp.compat import IS_MICROPYTHON, const, digests_equal, hmac_sha256, now_ms
from shared_etp.errors import ProtocolError
from shared_etp.fields import (
    DEADLINE_MS,
    FIELD_HIGH,
    FIELD_LOW,
    FIELD_NAMES,
    HEADER_MASK,
    PRIORITY,
    REQUIRED_MASK,
)
from shared_etp.replay import ReplayGuard

# schema.py's values, private here so a board need not load schema (tests check they agree).
_PROTOCOL_VERSION = const(1)
_TAG_BYTES = const(32)
_MAX_FRAME_BYTES = const(512)
_DEFAULT_TTL_MS = const(10000)
_TYPE_COUNT = const(10)

if IS_MICROPYTHON:
    _key_of = FIELD_NAMES.index  # 25 interned names: a scan costs no heap
    _host_parse = None  # the pure codec decodes (strict: it rejects non-canonical bodies)


def validate(msg):
    """Check a message dict (field name -> int) against the schema; raise ProtocolError."""
    if not isinstance(msg, dict):
        raise ProtocolError(_E.WRONG_TYPE, "not a map")
    present = 0
    for name, value in msg.items():
        try:
            key = _key_of(name)
        except (KeyError, ValueError, TypeError):
            raise ProtocolError(_E.UNKNOWN_FIELD, "unknown field " + repr(name)) from None
        if type(value) is not int:
            raise ProtocolError(_E.WRONG_TYPE, "%s not int" % name)
        if value < FIELD_LOW[key] or value > FIELD_HIGH[key]:
            raise ProtocolError(_E.OUT_OF_RANGE, "%s=%d" % (name, value))
        present |= 1 << key
    missing = HEADER_MASK & ~present
    what = "no %s"
    if not missing:
        if msg["v"] != _PROTOCOL_VERSION:
            raise ProtocolError(_E.BAD_VERSION, "v=%d" % msg["v"])
        missing = REQUIRED_MASK[msg["t"]] & ~present
        what = "t=%d requires field %%s" % msg["t"]
    if missing:
        key = 0
        while not missing >> key & 1:
            key += 1
        raise ProtocolError(_E.MISSING_FIELD, what % FIELD_NAMES[key])


def _put(out, key, value):
    # One field of a canonical body: its range checked, key and value heads written.
    if type(value) is not int:
        raise ProtocolError(_E.WRONG_TYPE, "%s not int" % FIELD_NAMES[key])
    if value < FIELD_LOW[key] or value > FIELD_HIGH[key]:
        raise ProtocolError(_E.OUT_OF_RANGE, "%s=%d" % (FIELD_NAMES[key], value))
    _cbor_head(out, 0, key)
    if value >= 0:
        _cbor_head(out, 0, value)
    else:
        _cbor_head(out, 1, -1 - value)


def parse_frame(frame, msg=None):
    """Split and decode a frame WITHOUT checking its tag: returns (msg, body, tag).

    For tools that show what a frame says; anything that acts on a frame uses decode_frame.
    msg: a dict to decode into (a board's Receiver reuses one; cbor.loads).
    """
    size = len(frame)
    if size > _MAX_FRAME_BYTES:
        raise ProtocolError(_E.OVERSIZED, "%d bytes" % size)
    if size <= _TAG_BYTES:
        raise ProtocolError(_E.TRUNCATED, "%d bytes" % size)
    body = bytes(frame[: size - _TAG_BYTES])
    tag = bytes(frame[size - _TAG_BYTES :])
    if body[0] >> 5 != 5:
        raise ProtocolError(_E.WRONG_TYPE, "not a map")
    if _host_parse:  # CPython with cbor2 (host.cpython_frames): the same checks, faster
        return _host_parse(body), body, tag
    # Decoded straight into the message dict (a board's heap has few blocks for two).
    msg = _pure_cbor.loads(body, FIELD_NAMES, msg)
    t = msg.get("t")
    if type(t) is int and (t < 0 or t >= _TYPE_COUNT):
        raise ProtocolError(_E.UNKNOWN_TYPE, "t=%d" % t)
    validate(msg)
    return msg, body, tag


class Keyring:
    """HMAC keys by key id, each optionally bound to the one sender id allowed to use it."""

    def __init__(self):
        self._keys = {}

    def add(self, kid, key, owner=None):
        """Register key bytes under kid; with owner, only frames from that src may use it."""
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("an HMAC key must be at least 16 bytes")
        self._keys[kid] = (bytes(key), owner)

    def key_for(self, kid, src):
        """The key for kid if src may use it, else None."""
        entry = self._keys.get(kid)
        if entry is None or (entry[1] is not None and entry[1] != src):
            return None
        return entry[0]

    if not IS_MICROPYTHON:  # hub-side: a board's keys never change (and methods cost heap)

        def remove(self, kid):
            """Revoke a key id."""
            self._keys.pop(kid, None)

        def __contains__(self, kid):
            return kid in self._keys

        def __len__(self):
            return len(self._keys)


def decode_frame(frame, keyring, msg=None):
    """Decode and authenticate a frame; returns the message dict or raises ProtocolError."""
    msg, body, tag = parse_frame(frame, msg)
    key = keyring.key_for(msg["kid"], msg["src"])
    if key is None:
        raise ProtocolError(_E.UNKNOWN_KEY, "kid %d src %d" % (msg["kid"], msg["src"]))
    if not digests_equal(hmac_sha256(key, body), tag):
        raise ProtocolError(_E.BAD_TAG, "bad tag")
    return msg


def check_fresh(msg, now, max_skew_ms):
    """Raise ProtocolError if msg expired (ts + ttl + skew < now) or comes from the future."""
    age = now - msg["ts"]
    ttl = msg["ttl"] or DEADLINE_MS[msg["t"]]  # ttl 0: the type's deadline
    if age > ttl + max_skew_ms:
        raise ProtocolError(_E.EXPIRED, "%d ms old, ttl %d" % (age, ttl))
    if -age > max_skew_ms:
        raise ProtocolError(_E.FROM_FUTURE, "%d ms ahead" % -age)


class Sender:
    """Stamps and signs outgoing messages for one identity (src, key id, key, boot epoch)."""

    def __init__(self, src, kid, key, epoch, seq=0, clock=now_ms):
        self.src = src
        self.kid = kid
        self.key = bytes(key)
        self.epoch = epoch
        self.seq = seq
        self.clock = clock

    # The dict API lives in frame_dict.py: a board signs with sign() alone and never loads it.
    # On CPython its functions are the methods stamp() and frame(); on MicroPython (tests,
    # tools) call them as frame_dict.stamp(sender, ...) and frame_dict.frame(sender, ...).
    if not IS_MICROPYTHON:
        from shared_etp.frame_dict import frame, stamp  # type: ignore[misc]

    def sign(self, msg_type, dst, msg_id, payload, ttl=_DEFAULT_TTL_MS):
        """The frame bytes (a bytearray on MicroPython) of a message stamped like frame()'s,
        payload given as a flat tuple (key, value, key, value, ...) in increasing key order,
        None values left out.

        The same bytes as frame() without a message dict: a board's replies are made this way,
        since a ~20-field dict is a 368-byte block (grown through 272 bytes) and a 64 KB heap
        fragmented by its code has few of those; the tuple is one block of ~6 x 32 bytes.
        """
        seq = self.seq
        if seq > 0xFFFFFFFF:
            raise ProtocolError(_E.OUT_OF_RANGE, "seq spent")
        self.seq = seq + 1
        count = 11
        for index in range(1, len(payload), 2):
            if payload[index] is not None:
                count += 1
        out = bytearray()
        _cbor_head(out, 5, count)
        _put(out, 0, _PROTOCOL_VERSION)
        _put(out, 1, msg_type)
        _put(out, 2, (seq & 0xFFFFFFFF) if msg_id is None else msg_id)
        _put(out, 3, self.src)
        _put(out, 4, dst)
        _put(out, 5, self.kid)
        _put(out, 6, self.epoch)
        _put(out, 7, seq)
        _put(out, 8, self.clock())
        _put(out, 9, ttl)
        _put(out, 10, PRIORITY[msg_type])
        present = HEADER_MASK
        for index in range(0, len(payload), 2):
            key = payload[index]
            value = payload[index + 1]
            if value is not None:
                if present >> key:
                    raise ValueError("payload keys out of order")
                _put(out, key, value)
                present |= 1 << key
        missing = REQUIRED_MASK[msg_type] & ~present
        if missing:
            key = 0
            while not missing >> key & 1:
                key += 1
            raise ProtocolError(_E.MISSING_FIELD, "t=%d requires field %s" % (msg_type,
                                                                             FIELD_NAMES[key]))
        out.extend(hmac_sha256(self.key, out))
        if len(out) > _MAX_FRAME_BYTES:
            raise ProtocolError(_E.OVERSIZED, "%d bytes" % len(out))
        # A board publishes the bytearray as it is (the packet copies it): no second copy.
        return out if IS_MICROPYTHON else bytes(out)

class Receiver:
    """Opens incoming frames: decode, authenticate, check freshness, reject replays.

    Rejections are counted by reason code in `rejected`; callers log and drop them. On
    MicroPython every frame is decoded into one dict, `msg` (made at the first), so what open()
    returns is valid until the next open() (a board handles a frame before it reads the next):
    no frame then needs a dict-sized block of a board's fragmented heap.
    """

    def __init__(self, keyring, max_skew_ms=2000, max_senders=4096, clock=now_ms):
        self.keyring = keyring
        self.msg = None  # MicroPython: the dict every frame is decoded into (the hub: cbor2)
        self.max_skew_ms = max_skew_ms
        self.replay = ReplayGuard(max_senders)
        self.clock = clock
        self.accepted = 0
        self.rejected = {}

    def open(self, frame, now=None):
        """Return the authenticated, fresh, first-seen message, or raise ProtocolError."""
        try:
            msg = self.msg
            if msg is None and IS_MICROPYTHON:  # room for a request's 14 fields, made once
                msg = self.msg = dict.fromkeys(FIELD_NAMES[:14])
            msg = decode_frame(frame, self.keyring, msg)
            check_fresh(msg, self.clock() if now is None else now, self.max_skew_ms)
            self.replay.check(msg["src"], msg["ep"], msg["seq"])
        except ProtocolError as exc:
            self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
            raise
        self.accepted += 1
        return msg


# Market notices: retained, signed site-wide state (reputation of bidders, recent clearing
# prices) published by the hub. Same framing (canonical CBOR body || HMAC tag); the body is
# {0: version, 1: kind, 2: src, 3: kid, 4: ts, 5: data}. A receiver keeps the newest per kind.
NOTICE_REPUTATION = 1  # data: {bidder id: reputation in hundredths of a percent}
NOTICE_CLEARING = 2  # data: [recent clearing prices, milli-cents/kWh, newest last]


def decode_notice(frame, keyring):
    """Authenticate a market notice; returns (kind, ts, data) or raises ProtocolError."""
    size = len(frame)
    if size > _MAX_FRAME_BYTES * 8:
        raise ProtocolError(_E.OVERSIZED, "%d bytes" % size)
    if size <= _TAG_BYTES:
        raise ProtocolError(_E.TRUNCATED, "too short")
    body = bytes(frame[: size - _TAG_BYTES])
    raw = _pure_cbor.loads(body)
    if not isinstance(raw, dict) or sorted(raw.keys()) != [0, 1, 2, 3, 4, 5]:
        raise ProtocolError(_E.WRONG_TYPE, "not notice")
    for field in (0, 1, 2, 3, 4):
        if type(raw[field]) is not int:
            raise ProtocolError(_E.WRONG_TYPE, "not int")
    if raw[0] != _PROTOCOL_VERSION:
        raise ProtocolError(_E.BAD_VERSION, "v=%d" % raw[0])
    # No re-encoding check: the pure loads itself rejects every non-canonical body.
    key = keyring.key_for(raw[3], raw[2])
    if key is None:
        raise ProtocolError(_E.UNKNOWN_KEY, "kid %d src %d" % (raw[3], raw[2]))
    if not digests_equal(hmac_sha256(key, body), bytes(frame[size - _TAG_BYTES :])):
        raise ProtocolError(_E.BAD_TAG, "bad tag")
    return raw[1], raw[4], raw[5]


if not IS_MICROPYTHON:  # the hub-side helpers stay importable from here (boards: frame_dict)
    from shared_etp.host import cpython_frames

    _key_of, _host_parse = cpython_frames(validate)
    from shared_etp.frame_dict import encode_body, encode_frame  # noqa: F401
    from shared_etp.signing import (  # noqa: F401
        derive_key,
        derive_notice_key,
        encode_notice,
        notice_key,
    )
