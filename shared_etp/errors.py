"""Protocol errors: one exception class, one short code per way a frame can be wrong."""

# Reason codes (stable strings: counted in metrics, logged, shown to users).
TRUNCATED = "truncated"  # frame shorter than a body plus its tag, or CBOR cut short
OVERSIZED = "oversized"  # frame longer than MAX_FRAME_BYTES
MALFORMED = "malformed"  # not well-formed CBOR, trailing bytes, or not canonical
WRONG_TYPE = "wrong_type"  # a value of the wrong CBOR type (float, text, tag, ...)
UNKNOWN_TYPE = "unknown_type"  # message type outside 0..9
UNKNOWN_FIELD = "unknown_field"  # a map key this protocol version does not define
MISSING_FIELD = "missing_field"  # a field the message type requires is absent
OUT_OF_RANGE = "out_of_range"  # an integer outside its field's range
BAD_VERSION = "bad_version"  # protocol version this code does not speak
UNKNOWN_KEY = "unknown_key"  # key id not in the keyring, or not issued to this sender
BAD_TAG = "bad_tag"  # HMAC tag does not verify
REPLAY = "replay"  # sequence number already seen, or older than the window
STALE_EPOCH = "stale_epoch"  # boot epoch older than the sender's current one
EXPIRED = "expired"  # timestamp + ttl is in the past
FROM_FUTURE = "from_future"  # timestamp further ahead than the allowed clock skew
BAD_LEGACY = "bad_legacy"  # not a valid Go-prototype 14-field line

ALL_CODES = (
    TRUNCATED,
    OVERSIZED,
    MALFORMED,
    WRONG_TYPE,
    UNKNOWN_TYPE,
    UNKNOWN_FIELD,
    MISSING_FIELD,
    OUT_OF_RANGE,
    BAD_VERSION,
    UNKNOWN_KEY,
    BAD_TAG,
    REPLAY,
    STALE_EPOCH,
    EXPIRED,
    FROM_FUTURE,
    BAD_LEGACY,
)


class ProtocolError(ValueError):
    """A frame or message was rejected; `code` says which rule, `reason` says why in words."""

    def __init__(self, code, reason):
        super().__init__(code + ": " + reason)
        self.code = code
        self.reason = reason
