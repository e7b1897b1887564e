"""Regenerate tests/golden/vectors.json (run only when the wire format changes on purpose).

Valid vectors are encoded by shared_etp and cross-checked against cbor2's canonical encoder;
invalid vectors are hand-built byte strings with the rejection code both interpreters must give.
"""

import json
import sys
from pathlib import Path

import cbor2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from shared_etp.compat import hmac_sha256
from shared_etp.frame import (
    NOTICE_CLEARING,
    NOTICE_REPUTATION,
    derive_key,
    derive_notice_key,
    encode_frame,
    encode_notice,
)
from shared_etp.schema import FIELD_KEY, REQUIRED, TYPE_NAMES

MASTER = bytes(range(32))
DEVICE = 7
KEY = derive_key(MASTER, DEVICE)
TS = 1795500000000  # fixed timestamp: vectors never depend on the clock

SAMPLE = {
    "auc": 4242,
    "price": 21500,
    "sale": 18000,
    "etot": 100000,
    "pct": 5525,
    "ereq": 5000,
    "term": 3,
    "erem": 80000,
    "health": 0,
    "volt": 48200,
    "dis": -1500,
    "reason": 1,
    "soc": 8000,
    "round": 2,
}


def header(msg_type, seq, src=DEVICE, dst=0):
    return {
        "v": 1,
        "t": msg_type,
        "id": 1000 + seq,
        "src": src,
        "dst": dst,
        "kid": DEVICE,
        "ep": 1795499000,
        "seq": seq,
        "ts": TS,
        "ttl": 10000,
        "pri": 20,
    }


def signed(body):
    return body + hmac_sha256(KEY, body)


def main():
    valid = []
    for msg_type, name in enumerate(TYPE_NAMES):
        msg = header(msg_type, msg_type)
        for field in REQUIRED[msg_type]:
            msg[field] = SAMPLE[field]
        frame = encode_frame(msg, KEY)
        body = frame[:-32]
        reference = cbor2.dumps({FIELD_KEY[k]: v for k, v in msg.items()}, canonical=True)
        assert body == reference, name
        valid.append({"name": name, "message": msg, "frame": frame.hex()})
    # One message with every field at its extremes.
    msg = header(3, 99, src=0xFFFFFFFF, dst=0xFFFFFFFF)
    msg.update(SAMPLE)
    msg.update(
        {"price": 0x7FFFFFFF, "dis": -0x80000000, "etot": (1 << 40) - 1, "ts": (1 << 53) - 1}
    )
    valid.append({"name": "bid_extremes", "message": msg, "frame": encode_frame(msg, KEY).hex()})

    good = bytes.fromhex(valid[3]["frame"])  # a bid
    body = good[:-32]
    cut = bytes([0xAE]) + b"\x00\x01"  # map of 14 pairs, then only one pair
    invalid = [
        ("empty", b"", "truncated"),
        ("tag_only", good[-32:], "truncated"),
        ("body_cut_short", signed(cut), "truncated"),
        ("oversized", good + bytes(512), "oversized"),
        ("flipped_tag_bit", good[:-1] + bytes([good[-1] ^ 1]), "bad_tag"),
        ("flipped_body_bit", body[:-1] + bytes([body[-1] ^ 1]) + good[-32:], "bad_tag"),
        ("not_a_map", signed(b"\x83\x01\x02\x03"), "wrong_type"),
        ("trailing_bytes", signed(body + b"\x00"), "malformed"),
        ("indefinite_map", signed(b"\xbf" + body[1:] + b"\xff"), "malformed"),
    ]
    # Re-encode variants of the bid's fields.
    bid = dict(valid[3]["message"])

    def raw_body(pairs):
        out = bytearray([0xA0 + len(pairs)]) if len(pairs) < 24 else bytearray([0xB8, len(pairs)])
        for key, item in pairs:
            out += key
            out += item
        return signed(bytes(out))

    def enc(value):
        return cbor2.dumps(value)

    pairs = [
        (enc(FIELD_KEY[k]), enc(v)) for k, v in sorted(bid.items(), key=lambda kv: FIELD_KEY[kv[0]])
    ]
    swapped = list(pairs)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    invalid.append(("unsorted_keys", raw_body(swapped), "malformed"))
    duplicated = [*pairs, pairs[-1]]
    invalid.append(("duplicate_key", raw_body(duplicated), "malformed"))
    long_head = list(pairs)
    long_head[0] = (pairs[0][0], b"\x18\x01")  # version 1 written with a 1-byte extra head
    invalid.append(("long_integer_head", raw_body(long_head), "malformed"))
    as_float = list(pairs)
    as_float[-1] = (pairs[-1][0], b"\xfb" + bytes(8))
    invalid.append(("float_value", raw_body(as_float), "wrong_type"))
    as_text = list(pairs)
    as_text[-1] = (pairs[-1][0], enc("5000"))
    invalid.append(("text_value", raw_body(as_text), "wrong_type"))
    as_tag = list(pairs)
    as_tag[-1] = (pairs[-1][0], b"\xc1\x01")
    invalid.append(("cbor_tag_value", raw_body(as_tag), "wrong_type"))
    unknown_field = [*pairs, (enc(40), enc(1))]
    invalid.append(("unknown_field", raw_body(unknown_field), "unknown_field"))
    missing = [p for p in pairs if p[0] != enc(FIELD_KEY["price"])]
    invalid.append(("missing_price", raw_body(missing), "missing_field"))
    unknown_type = list(pairs)
    unknown_type[1] = (enc(1), enc(12))
    invalid.append(("unknown_type", raw_body(unknown_type), "unknown_type"))
    bad_version = list(pairs)
    bad_version[0] = (enc(0), enc(2))
    invalid.append(("bad_version", raw_body(bad_version), "bad_version"))
    out_of_range = list(pairs)
    out_of_range = [(k, enc(-5) if k == enc(FIELD_KEY["price"]) else v) for k, v in pairs]
    invalid.append(("negative_price", raw_body(out_of_range), "out_of_range"))
    unknown_key = [(k, enc(9) if k == enc(FIELD_KEY["kid"]) else v) for k, v in pairs]
    invalid.append(("unknown_key_id", raw_body(unknown_key), "unknown_key"))

    cbor_vectors = [
        {"value": v, "hex": cbor2.dumps(v, canonical=True).hex()}
        for v in [
            0,
            1,
            23,
            24,
            255,
            256,
            65535,
            65536,
            4294967295,
            4294967296,
            -1,
            -24,
            -25,
            -256,
            -257,
            2**53,
            -(2**63),
            2**64 - 1,
            "",
            "etp",
            "\u00e9\u20ac",
            [],
            [1, [2, 3]],
            {},
            {"1": 2},
            True,
            False,
            None,
        ]
    ]
    # maps with integer keys (JSON keeps them as strings, the checker converts)
    cbor_vectors.append(
        {
            "value_int_map": [[3, 1], [1, 2], [24, 3], [0, 4]],
            "hex": cbor2.dumps({3: 1, 1: 2, 24: 3, 0: 4}, canonical=True).hex(),
        }
    )
    # Market notices: board 7's own (src 0 = the hub, kid 7, its notice key), and what it
    # must refuse: the old site-wide form (kid 0, derive_key(master, 0)), board 8's notice,
    # board 8's key under kid 7.
    notice_key = derive_notice_key(MASTER, DEVICE)
    other = DEVICE + 1
    notices = []
    for name, kind, data in (
        ("reputation", NOTICE_REPUTATION, {100001: 9500, 100002: 4000}),
        ("clearing", NOTICE_CLEARING, [21000, 22000, 21500]),
    ):
        frame = encode_notice(kind, data, 0, DEVICE, notice_key, ts=TS)
        # JSON has no int-keyed maps: a map is kept as [key, value] pairs
        as_json = [list(pair) for pair in data.items()] if isinstance(data, dict) else data
        notices.append(
            {"name": name, "kind": kind, "data": as_json, "ts": TS, "frame": frame.hex()}
        )
    reputation = {100001: 0}
    refused_notices = [
        (
            "site_wide_key",
            encode_notice(NOTICE_REPUTATION, reputation, 0, 0, derive_key(MASTER, 0), ts=TS),
            "unknown_key",
        ),
        (
            "other_boards_notice",
            encode_notice(
                NOTICE_REPUTATION, reputation, 0, other, derive_notice_key(MASTER, other), ts=TS
            ),
            "unknown_key",
        ),
        (
            "other_boards_key",
            encode_notice(
                NOTICE_REPUTATION, reputation, 0, DEVICE, derive_notice_key(MASTER, other), ts=TS
            ),
            "bad_tag",
        ),
    ]
    data = {
        "master_secret": MASTER.hex(),
        "device_id": DEVICE,
        "key": KEY.hex(),
        "valid": valid,
        "invalid": [{"name": n, "frame": f.hex(), "code": c} for n, f, c in invalid],
        "cbor": cbor_vectors,
        "notice_key": notice_key.hex(),
        "notices": notices,
        "refused_notices": [
            {"name": n, "frame": f.hex(), "code": c} for n, f, c in refused_notices
        ],
    }
    Path(__file__).with_name("vectors.json").write_text(json.dumps(data, indent=1) + "\n")
    print(
        "wrote", len(valid), "valid,", len(invalid), "invalid,", len(cbor_vectors), "cbor vectors"
    )


if __name__ == "__main__":
    main()
