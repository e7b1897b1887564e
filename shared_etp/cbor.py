"""Pure-Python deterministic CBOR (RFC 8949 §4.2.1) codec that runs on MicroPython and CPython.

Encodes int, bytes, str, list/tuple, dict, bool and None with the shortest heads and map keys
sorted by their encoded bytes (the general encoder, `dumps`, is in cbor_encode.py; importable
from here on CPython). The decoder is
strict and bounded: definite lengths only, no floats or tags, limited nesting and item
counts; anything else raises ProtocolError.
"""

from shared_etp import errors as _E  # codes by attribute: one global, strings shared
from shared_etp.compat import IS_MICROPYTHON, const
from shared_etp.errors import ProtocolError

_MAX_DEPTH = const(4)
_MAX_ITEMS = const(256)
_UINT64_LIMIT = 1 << 64


def _head(out, major, value):
    major <<= 5
    if value < 24:
        out.append(major | value)
    elif value < 0x100:
        out.append(major | 24)
        out.append(value)
    elif value < 0x10000:
        out.append(major | 25)
        out.extend(value.to_bytes(2, "big"))
    elif value < 0x100000000:
        out.append(major | 26)
        out.extend(value.to_bytes(4, "big"))
    elif value < _UINT64_LIMIT:
        out.append(major | 27)
        out.extend(value.to_bytes(8, "big"))
    else:
        raise ProtocolError(_E.OUT_OF_RANGE, ">64 bits")


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.bad_key = None  # loads(data, names): (first key that does not index names,)

    def take(self, count):
        end = self.pos + count
        if end > len(self.data):
            raise ProtocolError(_E.TRUNCATED, "past end")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def head(self):
        if self.pos >= len(self.data):
            raise ProtocolError(_E.TRUNCATED, "past end")
        initial = self.data[self.pos]
        self.pos += 1
        major = initial >> 5
        info = initial & 0x1F
        if info < 24:
            return major, info, info
        if info == 24:
            value = self.take(1)[0]
            floor = 24
        elif info == 25:
            value = int.from_bytes(self.take(2), "big")
            floor = 0x100
        elif info == 26:
            value = int.from_bytes(self.take(4), "big")
            floor = 0x10000
        elif info == 27:
            value = int.from_bytes(self.take(8), "big")
            floor = 0x100000000
        else:
            floor = -1
        if floor >= 0:
            # Deterministic encoding uses the shortest head (floats are rejected elsewhere).
            if value < floor and major != 7:
                raise ProtocolError(_E.MALFORMED, "long head")
            return major, info, value
        if info == 31:
            raise ProtocolError(_E.MALFORMED, "indefinite")
        raise ProtocolError(_E.MALFORMED, "info %d" % info)


def _decode(reader, depth, names=None, msg=None):
    major, info, value = reader.head()
    if major == 0:
        return value
    if major == 1:
        return -1 - value
    if major == 2:
        return bytes(reader.take(value))
    if major == 3:
        try:
            return str(reader.take(value), "utf-8")
        except UnicodeError:
            raise ProtocolError(_E.MALFORMED, "not utf-8") from None
    if major == 4 or major == 5:
        if depth >= _MAX_DEPTH:
            raise ProtocolError(_E.MALFORMED, "too deep")
        if value > _MAX_ITEMS:
            raise ProtocolError(_E.MALFORMED, "too many")
        if major == 4:
            return [_decode(reader, depth + 1) for _ in range(value)]
        if msg is not None:  # the caller's dict, emptied: a dict keeps its table (no allocation)
            for name in names:
                msg.pop(name, None)
            result = msg
        else:
            # A table of exactly `value` slots, made at once: a dict grown key by key
            # reallocates its table at 2, 4, ... 12, 17 slots (a 14-field frame would end in a
            # 272-byte block, past a 192-byte one, on a board's fragmented heap). MicroPython
            # has no way to size a dict up front, so it is made with `slots` integer keys that
            # are deleted at once: the table keeps its size and takes the real keys without a
            # regrowth. (No more slots than the bytes left could fill, 2 per pair: a lying
            # count cannot claim heap.)
            slots = min(value, (len(reader.data) - reader.pos) // 2)
            result = dict.fromkeys(range(slots))
            for slot in range(slots):
                del result[slot]
        data = reader.data
        previous = b""
        for _ in range(value):
            start = reader.pos
            key = _decode(reader, depth + 1)
            if isinstance(key, (list, dict)):
                raise ProtocolError(_E.WRONG_TYPE, "key type")
            encoded_key = bytes(data[start : reader.pos])
            if encoded_key <= previous:
                if encoded_key == previous:
                    raise ProtocolError(_E.MALFORMED, "dup key " + repr(key))
                raise ProtocolError(_E.MALFORMED, "key order")
            previous = encoded_key
            value = _decode(reader, depth + 1)
            if names is None:
                result[key] = value
            elif type(key) is int and 0 <= key < len(names):
                result[names[key]] = value
            elif reader.bad_key is None:
                reader.bad_key = (key,)  # raised once the whole item has decoded
        return result
    if major == 6:
        raise ProtocolError(_E.WRONG_TYPE, "cbor tag")
    # major 7: simple values and floats
    if info < 24:
        if value == 20:
            return False
        if value == 21:
            return True
        if value == 22:
            return None
    if info in (25, 26, 27):
        raise ProtocolError(_E.WRONG_TYPE, "float")
    raise ProtocolError(_E.WRONG_TYPE, "simple")


def loads(data, names=None, msg=None):
    """Decode exactly one deterministically encoded CBOR item that fills all of data.

    Non-shortest heads, unsorted or duplicate map keys and trailing bytes are rejected. With
    names (a frame's field names), a top-level map comes back keyed by names[key] (a frame body
    decodes into its message dict at once, no second dict); once the whole item has decoded, a
    key that is not an index of names raises wrong_type (not an integer) or unknown_field. With
    names and msg (a dict keyed by names or empty), the map is decoded into msg, emptied first:
    a board decodes every frame into one dict, so a frame needs no dict-sized block of heap.
    """
    reader = _Reader(data)
    value = _decode(reader, 0, names, msg)
    if reader.pos != len(data):
        raise ProtocolError(_E.MALFORMED, "trailing")
    if reader.bad_key is not None:
        key = reader.bad_key[0]
        if type(key) is not int:
            raise ProtocolError(_E.WRONG_TYPE, "key type")
        raise ProtocolError(_E.UNKNOWN_FIELD, "key %d" % key)
    return value


if not IS_MICROPYTHON:  # the hub: cbor.dumps (a board, which only signs frames with _head and
    # decodes, never loads the general encoder; tools on MicroPython use cbor_encode.dumps)
    from shared_etp.cbor_encode import dumps  # noqa: F401
