"""Protocol micro-benchmark body; runs unchanged on CPython and MicroPython, prints one JSON line.

Usage: <python> proto_worker.py <seconds per measurement>
"""

import json
import sys
import time

from shared_etp.frame import Keyring, Receiver, Sender, decode_frame
from shared_etp.frame_dict import encode_frame, stamp
from shared_etp.frame_dict import frame as make_frame
from shared_etp.names import TYPE_NAMES
from shared_etp.replay import ReplayGuard
from shared_etp.schema import (
    BESS_STATUS,
    BID,
    BID_ACCEPT,
    BID_CONFIRM,
    BID_REJECT,
    DEVICE_FAILURE,
    QUERY,
    QUERY_RESPONSE,
    REGISTER,
    TERMINATE,
)
from shared_etp.signing import derive_key

if hasattr(time, "ticks_us"):

    def now_us():
        return time.ticks_us()  # type: ignore[attr-defined]

    def elapsed_us(start):
        return time.ticks_diff(time.ticks_us(), start)  # type: ignore[attr-defined]

else:

    def now_us():
        return time.perf_counter_ns() // 1000

    def elapsed_us(start):
        return time.perf_counter_ns() // 1000 - start


DEVICE = 17
KEY = derive_key(b"bench-master-secret-0123456789ab", DEVICE)
AGGREGATOR = 1003
EPOCH = 1795500000

# Realistic field values for each type (what a 48 V, 100 kWh battery would send).
SAMPLES = {
    REGISTER: {"etot": 100000, "pct": 6000, "sale": 18000, "erem": 82000, "health": 0},
    QUERY: {"auc": 123456},
    QUERY_RESPONSE: {
        "auc": 123456,
        "etot": 100000,
        "pct": 6000,
        "sale": 18000,
        "erem": 82000,
        "health": 0,
        "volt": 51200,
        "dis": 0,
        "soc": 8200,
    },
    BID: {"auc": 123456, "price": 21500, "ereq": 5000, "round": 3},
    BID_ACCEPT: {"auc": 123456, "price": 21500, "ereq": 5000},
    BID_CONFIRM: {"auc": 123456, "price": 21500, "ereq": 5000},
    BID_REJECT: {"auc": 123456, "reason": 1},
    TERMINATE: {"auc": 123456, "term": 1},
    DEVICE_FAILURE: {"health": 2, "reason": 10, "volt": 39000},
    BESS_STATUS: {"erem": 82000, "health": 0, "volt": 51200, "dis": 2500, "soc": 8200},
}


def timed(function, seconds):
    """Mean microseconds per call over at least `seconds` (batches of 200 calls)."""
    budget_us = int(seconds * 1000000)
    calls = 0
    start = now_us()
    while True:
        for _ in range(200):
            function()
        calls += 200
        spent = elapsed_us(start)
        if spent >= budget_us:
            return spent / calls


def main():
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
    bidder = Sender(AGGREGATOR, DEVICE, KEY, EPOCH)
    keyring = Keyring()
    keyring.add(DEVICE, KEY)
    bid = stamp(bidder, BID, dst=DEVICE, **SAMPLES[BID])
    signed = encode_frame(bid, KEY)

    def sign():
        encode_frame(bid, KEY)

    def verify():
        decode_frame(signed, keyring)

    # Full receive path: authenticate + freshness + replay window (fresh frame each call).
    frames = [make_frame(bidder, BID, dst=DEVICE, **SAMPLES[BID])[0] for _ in range(64)]
    receiver = Receiver(keyring)
    position = [0]

    def receive():
        index = position[0]
        position[0] = index + 1
        receiver.open(frames[index & 63])
        if index & 63 == 63:
            receiver.replay = ReplayGuard()  # the same 64 frames are new again

    sizes = {}
    for msg_type in range(len(TYPE_NAMES)):
        sender = (
            bidder
            if msg_type in (QUERY, BID, BID_CONFIRM, TERMINATE)
            else Sender(DEVICE, DEVICE, KEY, EPOCH)
        )
        sizes[TYPE_NAMES[msg_type]] = len(
            make_frame(sender, msg_type, dst=0, **SAMPLES[msg_type])[0]
        )
    result = {
        "interpreter": sys.implementation.name,
        "encode_sign_us": timed(sign, seconds),
        "verify_decode_us": timed(verify, seconds),
        "receive_us": timed(receive, seconds),
        "frame_bytes": sizes,
    }
    print(json.dumps(result))


main()
