"""The general deterministic CBOR encoder, `dumps` (RFC 8949 §4.2.1).

Apart from cbor.py so a board, which signs frames with cbor._head alone and only decodes, does
not hold it in its heap; on CPython `cbor.dumps` is this one.
"""

from shared_etp import errors as _E  # codes by attribute: one global, strings shared
from shared_etp.cbor import _head
from shared_etp.errors import ProtocolError


def encode(out, value):
    """Append the deterministic CBOR encoding of value to the bytearray out."""
    if value is None:
        out.append(0xF6)
    elif value is True:
        out.append(0xF5)
    elif value is False:
        out.append(0xF4)
    elif isinstance(value, int):
        if value >= 0:
            _head(out, 0, value)
        else:
            _head(out, 1, -1 - value)
    elif isinstance(value, (bytes, bytearray)):
        _head(out, 2, len(value))
        out.extend(value)
    elif isinstance(value, str):
        data = value.encode("utf-8")
        _head(out, 3, len(data))
        out.extend(data)
    elif isinstance(value, (list, tuple)):
        _head(out, 4, len(value))
        for item in value:
            encode(out, item)
    elif isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            key_buffer = bytearray()
            encode(key_buffer, key)
            pairs.append((bytes(key_buffer), item))
        pairs.sort(key=lambda pair: pair[0])
        _head(out, 5, len(pairs))
        previous = None
        for encoded_key, item in pairs:
            if encoded_key == previous:
                raise ProtocolError(_E.MALFORMED, "dup key")
            previous = encoded_key
            out.extend(encoded_key)
            encode(out, item)
    else:
        raise ProtocolError(_E.WRONG_TYPE, "type " + type(value).__name__)


def dumps(value):
    """Encode value as deterministic CBOR bytes."""
    out = bytearray()
    encode(out, value)
    return bytes(out)
