"""Frames: a canonical CBOR map of integer fields followed by its HMAC-SHA256 tag.

    frame = body || HMAC-SHA256(key[kid], body)      (tag: the last 32 bytes)

Messages are dicts of field name -> int (see schema.FIELDS). Encoding validates first; decoding
checks size, CBOR well-formedness and canonical form, field types and ranges, the key and the
tag (over the body bytes as received, compared in constant time). Sender and Receiver add the
header bookkeeping, freshness (TTL) and replay protection both sides share.
"""

from shared_etp import cbor as _pure_cbor
from shared_etp.compat import digests_equal, hmac_sha256, native_cbor, now_ms
from shared_etp.errors import (
    BAD_TAG,
    BAD_VERSION,
    EXPIRED,
    FROM_FUTURE,
    MALFORMED,
    MISSING_FIELD,
    OUT_OF_RANGE,
    OVERSIZED,
    TRUNCATED,
    UNKNOWN_FIELD,
    UNKNOWN_KEY,
    UNKNOWN_TYPE,
    WRONG_TYPE,
    ProtocolError,
)
from shared_etp.replay import ReplayGuard
from shared_etp.schema import (
    DEADLINE_MS,
    DEFAULT_TTL_MS,
    FIELD_KEY,
    FIELD_NAME,
    FIELD_RANGE,
    HEADER_FIELDS,
    MAX_FRAME_BYTES,
    PRIORITY,
    PROTOCOL_VERSION,
    REQUIRED,
    TAG_BYTES,
    TYPE_NAMES,
)

_native = native_cbor()
if _native is None:
    _dumps = _pure_cbor.dumps
    _loads = _pure_cbor.loads
    _LOADS_IS_STRICT = True  # the pure decoder itself rejects non-canonical bodies
else:
    _LOADS_IS_STRICT = False
    _dumps, _native_loads = _native

    def _loads(data):
        try:
            return _native_loads(data)
        except ProtocolError:
            raise
        except EOFError:
            raise ProtocolError(TRUNCATED, "CBOR item runs past the end of the frame") from None
        except Exception as exc:  # cbor2 raises many kinds on hostile input
            if "premature end" in str(exc) or "EOF" in type(exc).__name__:
                raise ProtocolError(TRUNCATED, "CBOR item runs past the end of the frame") from None
            raise ProtocolError(MALFORMED, "not well-formed CBOR") from None


def validate(msg):
    """Check a message dict (field name -> int) against the schema; raise ProtocolError."""
    if not isinstance(msg, dict):
        raise ProtocolError(WRONG_TYPE, "a message is a map of field names to integers")
    for name, value in msg.items():
        bounds = FIELD_RANGE.get(name)
        if bounds is None:
            raise ProtocolError(UNKNOWN_FIELD, "unknown field " + repr(name))
        if type(value) is not int:
            raise ProtocolError(
                WRONG_TYPE, "field %s must be an integer, not %s" % (name, type(value).__name__)
            )
        if value < bounds[0] or value > bounds[1]:
            raise ProtocolError(
                OUT_OF_RANGE,
                "field %s=%d outside %d..%d" % (name, value, bounds[0], bounds[1]),
            )
    for name in HEADER_FIELDS:
        if name not in msg:
            raise ProtocolError(MISSING_FIELD, "header field %s is missing" % name)
    if msg["v"] != PROTOCOL_VERSION:
        raise ProtocolError(
            BAD_VERSION, "protocol version %d is not %d" % (msg["v"], PROTOCOL_VERSION)
        )
    msg_type = msg["t"]
    for name in REQUIRED[msg_type]:
        if name not in msg:
            raise ProtocolError(
                MISSING_FIELD, "%s requires field %s" % (TYPE_NAMES[msg_type], name)
            )


def encode_body(msg):
    """Validate msg and return its canonical CBOR body (no tag)."""
    validate(msg)
    return _dumps({FIELD_KEY[name]: value for name, value in msg.items()})


def encode_frame(msg, key):
    """Validate msg and return body || HMAC-SHA256(key, body)."""
    body = encode_body(msg)
    frame = body + hmac_sha256(key, body)
    if len(frame) > MAX_FRAME_BYTES:
        raise ProtocolError(
            OVERSIZED, "frame of %d bytes exceeds %d" % (len(frame), MAX_FRAME_BYTES)
        )
    return frame


def parse_frame(frame):
    """Split and decode a frame WITHOUT checking its tag: returns (msg, body, tag).

    For tools that show what a frame says; anything that acts on a frame uses decode_frame.
    """
    size = len(frame)
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(OVERSIZED, "frame of %d bytes exceeds %d" % (size, MAX_FRAME_BYTES))
    if size <= TAG_BYTES:
        raise ProtocolError(TRUNCATED, "frame of %d bytes is shorter than a body and tag" % size)
    body = bytes(frame[: size - TAG_BYTES])
    tag = bytes(frame[size - TAG_BYTES :])
    if body[0] >> 5 != 5:
        raise ProtocolError(WRONG_TYPE, "frame body must be a CBOR map")
    raw = _loads(body)
    if not isinstance(raw, dict):
        raise ProtocolError(WRONG_TYPE, "frame body must be a CBOR map")
    msg = {}
    for key, value in raw.items():
        if type(key) is not int:
            raise ProtocolError(WRONG_TYPE, "field keys must be integers")
        name = FIELD_NAME.get(key)
        if name is None:
            raise ProtocolError(UNKNOWN_FIELD, "unknown field key %r" % (key,))
        msg[name] = value
    t = msg.get("t")
    if type(t) is int and (t < 0 or t >= len(TYPE_NAMES)):
        raise ProtocolError(UNKNOWN_TYPE, "message type %d is not 0..9" % t)
    validate(msg)
    if _LOADS_IS_STRICT:
        canonical = True
    else:
        # Keys in order, then a re-encoding equal to the bytes received: together these reject
        # unsorted or duplicate keys and longer-than-necessary heads.
        keys = list(raw)
        try:
            canonical = keys == sorted(keys) and _dumps(raw) == body
        except Exception:
            canonical = False
    if not canonical:
        raise ProtocolError(MALFORMED, "body is not deterministic (canonical) CBOR")
    return msg, body, tag


def derive_key(master_secret, kid):
    """Per-key-id HMAC key derived from a site master secret: HMAC(master, "etp/v1/key/<kid>").

    Device N's key is derive_key(master, N); kid 0 is the hub's notice key. A board is
    provisioned with its own key and the notice key only, never the master secret.
    """
    return hmac_sha256(bytes(master_secret), b"etp/v1/key/" + str(kid).encode())


class Keyring:
    """HMAC keys by key id, each optionally bound to the one sender id allowed to use it."""

    def __init__(self):
        self._keys = {}

    def add(self, kid, key, owner=None):
        """Register key bytes under kid; with owner, only frames from that src may use it."""
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("an HMAC key must be at least 16 bytes")
        self._keys[kid] = (bytes(key), owner)

    def remove(self, kid):
        """Revoke a key id."""
        self._keys.pop(kid, None)

    def key_for(self, kid, src):
        """The key for kid if src may use it, else None."""
        entry = self._keys.get(kid)
        if entry is None or (entry[1] is not None and entry[1] != src):
            return None
        return entry[0]

    def __contains__(self, kid):
        return kid in self._keys

    def __len__(self):
        return len(self._keys)


def decode_frame(frame, keyring):
    """Decode and authenticate a frame; returns the message dict or raises ProtocolError."""
    msg, body, tag = parse_frame(frame)
    key = keyring.key_for(msg["kid"], msg["src"])
    if key is None:
        raise ProtocolError(
            UNKNOWN_KEY, "key id %d is not known for sender %d" % (msg["kid"], msg["src"])
        )
    if not digests_equal(hmac_sha256(key, body), tag):
        raise ProtocolError(BAD_TAG, "HMAC tag does not verify")
    return msg


def ttl_of(msg):
    """Effective time to live in ms: the frame's ttl, or its type's deadline when ttl is 0."""
    return msg["ttl"] or DEADLINE_MS[msg["t"]]


def check_fresh(msg, now, max_skew_ms):
    """Raise ProtocolError if msg expired (ts + ttl + skew < now) or comes from the future."""
    age = now - msg["ts"]
    if age > ttl_of(msg) + max_skew_ms:
        raise ProtocolError(EXPIRED, "frame is %d ms old, ttl %d ms" % (age, ttl_of(msg)))
    if -age > max_skew_ms:
        raise ProtocolError(FROM_FUTURE, "frame is %d ms ahead of this clock" % -age)


class Sender:
    """Stamps and signs outgoing messages for one identity (src, key id, key, boot epoch)."""

    def __init__(self, src, kid, key, epoch, seq=0, clock=now_ms):
        self.src = src
        self.kid = kid
        self.key = bytes(key)
        self.epoch = epoch
        self.seq = seq
        self.clock = clock

    def stamp(self, msg_type, dst=0, msg_id=None, ttl=None, pri=None, **fields):
        """Return a complete message dict with the header filled in and seq advanced."""
        seq = self.seq
        if seq > 0xFFFFFFFF:
            raise ProtocolError(OUT_OF_RANGE, "sequence exhausted: start a new epoch")
        self.seq = seq + 1
        msg = {
            "v": PROTOCOL_VERSION,
            "t": msg_type,
            "id": (seq & 0xFFFFFFFF) if msg_id is None else msg_id,
            "src": self.src,
            "dst": dst,
            "kid": self.kid,
            "ep": self.epoch,
            "seq": seq,
            "ts": self.clock(),
            "ttl": DEFAULT_TTL_MS if ttl is None else ttl,
            "pri": PRIORITY[msg_type] if pri is None else pri,
        }
        for name, value in fields.items():
            if value is not None:
                msg[name] = value
        return msg

    def frame(self, msg_type, dst=0, msg_id=None, ttl=None, pri=None, **fields):
        """Stamp, validate and sign a message; returns (frame bytes, message dict)."""
        msg = self.stamp(msg_type, dst, msg_id, ttl, pri, **fields)
        return encode_frame(msg, self.key), msg


class Receiver:
    """Opens incoming frames: decode, authenticate, check freshness, reject replays.

    Rejections are counted by reason code in `rejected`; callers log and drop them.
    """

    def __init__(self, keyring, max_skew_ms=2000, max_senders=4096, clock=now_ms):
        self.keyring = keyring
        self.max_skew_ms = max_skew_ms
        self.replay = ReplayGuard(max_senders)
        self.clock = clock
        self.accepted = 0
        self.rejected = {}

    def open(self, frame, now=None):
        """Return the authenticated, fresh, first-seen message, or raise ProtocolError."""
        try:
            msg = decode_frame(frame, self.keyring)
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


def encode_notice(kind, data, src, kid, key, ts=None):
    """Sign a market notice; data holds only integers, lists and integer-keyed maps."""
    body = _dumps(
        {0: PROTOCOL_VERSION, 1: kind, 2: src, 3: kid, 4: now_ms() if ts is None else ts, 5: data}
    )
    frame = body + hmac_sha256(key, body)
    if len(frame) > MAX_FRAME_BYTES * 8:
        raise ProtocolError(OVERSIZED, "notice of %d bytes is too large" % len(frame))
    return frame


def decode_notice(frame, keyring):
    """Authenticate a market notice; returns (kind, ts, data) or raises ProtocolError."""
    size = len(frame)
    if size > MAX_FRAME_BYTES * 8:
        raise ProtocolError(OVERSIZED, "notice of %d bytes is too large" % size)
    if size <= TAG_BYTES:
        raise ProtocolError(TRUNCATED, "notice shorter than a body and tag")
    body = bytes(frame[: size - TAG_BYTES])
    raw = _pure_cbor.loads(body)
    if not isinstance(raw, dict) or sorted(raw.keys()) != [0, 1, 2, 3, 4, 5]:
        raise ProtocolError(WRONG_TYPE, "notice body must be a map with keys 0..5")
    for field in (0, 1, 2, 3, 4):
        if type(raw[field]) is not int:
            raise ProtocolError(WRONG_TYPE, "notice header values must be integers")
    if raw[0] != PROTOCOL_VERSION:
        raise ProtocolError(BAD_VERSION, "notice version %d is not %d" % (raw[0], PROTOCOL_VERSION))
    if _pure_cbor.dumps(raw) != body:
        raise ProtocolError(MALFORMED, "notice body is not deterministic (canonical) CBOR")
    key = keyring.key_for(raw[3], raw[2])
    if key is None:
        raise ProtocolError(UNKNOWN_KEY, "key id %d is not known for sender %d" % (raw[3], raw[2]))
    if not digests_equal(hmac_sha256(key, body), bytes(frame[size - TAG_BYTES :])):
        raise ProtocolError(BAD_TAG, "HMAC tag does not verify")
    return raw[1], raw[4], raw[5]
