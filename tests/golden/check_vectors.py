"""Check the golden vectors on whichever interpreter runs this (MicroPython or CPython).

Usage: <python> tests/golden/check_vectors.py <repo root>. Prints one line per failure and a
final 'golden: N passed, M failed' line; exit status 1 if anything failed.
"""

import json
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
sys.path.insert(0, root)

from shared_etp import cbor
from shared_etp.cbor_encode import dumps
from shared_etp.errors import ProtocolError
from shared_etp.frame import Keyring, decode_frame, decode_notice
from shared_etp.frame_dict import encode_frame
from shared_etp.signing import derive_notice_key, encode_notice

with open(root + "/tests/golden/vectors.json") as handle:
    vectors = json.load(handle)

passed = 0
failed = 0


def report(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL", what)


key = bytes.fromhex(vectors["key"])
keyring = Keyring()
keyring.add(vectors["device_id"], key)

for vector in vectors["valid"]:
    msg = vector["message"]
    frame = bytes.fromhex(vector["frame"])
    try:
        encoded = encode_frame(msg, key)
        report(encoded == frame, "encode " + vector["name"] + " " + encoded.hex())
    except ProtocolError as exc:
        report(False, "encode %s raised %s" % (vector["name"], exc))
    try:
        report(decode_frame(frame, keyring) == msg, "decode " + vector["name"])
    except ProtocolError as exc:
        report(False, "decode %s raised %s" % (vector["name"], exc))

for vector in vectors["invalid"]:
    frame = bytes.fromhex(vector["frame"])
    try:
        decode_frame(frame, keyring)
        report(False, "invalid %s was accepted" % vector["name"])
    except ProtocolError as exc:
        report(
            exc.code == vector["code"],
            "invalid %s gave %s, expected %s" % (vector["name"], exc.code, vector["code"]),
        )

for vector in vectors["cbor"]:
    if "value_int_map" in vector:
        value = {}
        for pair in vector["value_int_map"]:
            value[pair[0]] = pair[1]
    else:
        value = vector["value"]
    data = bytes.fromhex(vector["hex"])
    report(dumps(value) == data, "cbor dumps %r -> %s" % (value, dumps(value).hex()))
    try:
        report(cbor.loads(data) == value, "cbor loads %s" % vector["hex"])
    except ProtocolError as exc:
        report(False, "cbor loads %s raised %s" % (vector["hex"], exc))

# Market notices: board N's own, keyed by derive_notice_key(master, N), key id N, sender 0.
notice_key = bytes.fromhex(vectors["notice_key"])
master = bytes.fromhex(vectors["master_secret"])
report(derive_notice_key(master, vectors["device_id"]) == notice_key, "derive_notice_key")
notice_ring = Keyring()
notice_ring.add(vectors["device_id"], notice_key, owner=0)
for vector in vectors["notices"]:
    data = vector["data"]
    if data and type(data[0]) is list:  # a map, kept as [key, value] pairs
        pairs = data
        data = {}
        for pair in pairs:
            data[pair[0]] = pair[1]
    frame = bytes.fromhex(vector["frame"])
    encoded = encode_notice(
        vector["kind"], data, 0, vectors["device_id"], notice_key, ts=vector["ts"]
    )
    report(encoded == frame, "encode notice " + vector["name"] + " " + encoded.hex())
    try:
        got = decode_notice(frame, notice_ring)
        report(got == (vector["kind"], vector["ts"], data), "decode notice " + vector["name"])
    except ProtocolError as exc:
        report(False, "decode notice %s raised %s" % (vector["name"], exc))
for vector in vectors["refused_notices"]:
    try:
        decode_notice(bytes.fromhex(vector["frame"]), notice_ring)
        report(False, "notice %s was accepted" % vector["name"])
    except ProtocolError as exc:
        report(
            exc.code == vector["code"],
            "notice %s gave %s, expected %s" % (vector["name"], exc.code, vector["code"]),
        )

print("golden: %d passed, %d failed (%s)" % (passed, failed, sys.implementation.name))
sys.exit(1 if failed else 0)
