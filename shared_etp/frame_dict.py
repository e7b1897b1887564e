"""Messages as dicts (field name -> int): canonical encoding and stamping for the hub and tools.

A board never loads this: it signs its own messages with `frame.Sender.sign` (no message dict)
and only decodes dicts. On CPython `shared_etp.frame` re-exports `encode_body` and
`encode_frame`, and `stamp`/`frame` here are `Sender.stamp`/`Sender.frame`; on MicroPython
(tests, tools) they are called from here: `frame(sender, msg_type, ...)`.
"""

from shared_etp import errors as _E  # codes by attribute: one global, strings shared
from shared_etp.cbor import _head as _cbor_head
from shared_etp.compat import IS_MICROPYTHON, const, hmac_sha256
from shared_etp.errors import ProtocolError
from shared_etp.fields import FIELD_NAMES, PRIORITY

_MAX_FRAME_BYTES = const(512)  # schema.MAX_FRAME_BYTES (tests check frame.py's copy)
_PROTOCOL_VERSION = const(1)
_DEFAULT_TTL_MS = const(10000)

if IS_MICROPYTHON:
    _host_body = None
else:
    from shared_etp.host import hub_codec

    _codec = hub_codec()
    _host_body = _codec[1] if _codec else None


def encode_body(msg):
    """Validate msg and return its canonical CBOR body (no tag)."""
    if _host_body is not None:  # CPython with cbor2: one pass for the common case
        body = _host_body(msg)
        if body is not None:
            return body
    _frame.validate(msg)  # raises what is wrong
    # Written straight out in key order (keys are small integers, so numeric order is RFC 8949
    # order): no intermediate dict, pairs or key buffers.
    out = bytearray()
    _cbor_head(out, 5, len(msg))
    for key in range(len(FIELD_NAMES)):
        value = msg.get(FIELD_NAMES[key])
        if value is not None:
            _frame._put(out, key, value)
    return bytes(out)


def encode_frame(msg, key):
    """Validate msg and return body || HMAC-SHA256(key, body)."""
    body = encode_body(msg)
    frame = body + hmac_sha256(key, body)
    if len(frame) > _MAX_FRAME_BYTES:
        raise ProtocolError(_E.OVERSIZED, "%d bytes" % len(frame))
    return frame


# Sender.stamp and Sender.frame (on CPython these functions are the methods): self is the Sender.
def stamp(self, msg_type, dst=0, msg_id=None, ttl=None, pri=None, **fields):
    """Return a complete message dict with the header filled in and seq advanced; fields the
    caller gives win over the header's defaults, fields given as None are left out."""
    return _stamp(self, msg_type, dst, msg_id, ttl, pri, fields)


def frame(self, msg_type, dst=0, msg_id=None, ttl=None, pri=None, **fields):
    """Stamp, validate and sign a message; returns (frame bytes, message dict)."""
    msg = _stamp(self, msg_type, dst, msg_id, ttl, pri, fields)
    return encode_frame(msg, self.key), msg


def _stamp(sender, msg_type, dst, msg_id, ttl, pri, msg):
    # The header goes into the caller's own **fields dict (fresh per call), not a copy.
    seq = sender.seq
    if seq > 0xFFFFFFFF:
        raise ProtocolError(_E.OUT_OF_RANGE, "seq spent")
    sender.seq = seq + 1
    if None in msg.values():
        for name in [name for name, value in msg.items() if value is None]:
            del msg[name]
    msg.setdefault("v", _PROTOCOL_VERSION)
    msg.setdefault("t", msg_type)
    msg.setdefault("id", (seq & 0xFFFFFFFF) if msg_id is None else msg_id)
    msg.setdefault("src", sender.src)
    msg.setdefault("dst", dst)
    msg.setdefault("kid", sender.kid)
    msg.setdefault("ep", sender.epoch)
    msg.setdefault("seq", seq)
    msg.setdefault("ts", sender.clock())
    msg.setdefault("ttl", _DEFAULT_TTL_MS if ttl is None else ttl)
    msg.setdefault("pri", PRIORITY[msg_type] if pri is None else pri)
    return msg


# Last: frame.py takes stamp and frame above as Sender's methods when it loads (CPython), which
# works whichever of the two modules is imported first.
from shared_etp import frame as _frame  # noqa: E402
