"""The Energy Trading Protocol: messages, canonical CBOR frames, HMAC, replay, topics."""

from shared_etp.errors import ProtocolError
from shared_etp.frame import (
    Keyring,
    Receiver,
    Sender,
    check_fresh,
    decode_frame,
    decode_notice,
    derive_key,
    encode_frame,
    encode_notice,
    parse_frame,
    validate,
)
from shared_etp.legacy import parse_legacy, to_legacy

__all__ = [
    "Keyring",
    "ProtocolError",
    "Receiver",
    "Sender",
    "check_fresh",
    "decode_frame",
    "decode_notice",
    "derive_key",
    "encode_frame",
    "encode_notice",
    "parse_frame",
    "parse_legacy",
    "to_legacy",
    "validate",
]
