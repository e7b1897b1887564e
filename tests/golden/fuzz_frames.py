"""Random-input fuzzing of the frame decoder on any interpreter (MicroPython included).

Usage: <python> tests/golden/fuzz_frames.py <repo root> <cases> <seed>. Every input must be
accepted (only the untouched frame) or raise ProtocolError; any other exception is a failure.
Prints 'fuzz: N cases, K accepted, R rejected, F crashed'.
"""

import random
import sys

root = sys.argv[1]
cases = int(sys.argv[2])
random.seed(int(sys.argv[3]))
sys.path.insert(0, root)

from shared_etp import cbor
from shared_etp.cbor_encode import dumps
from shared_etp.errors import ALL_CODES, ProtocolError
from shared_etp.frame import Keyring, Sender, decode_frame
from shared_etp.frame_dict import frame as make_frame
from shared_etp.schema import BESS_STATUS, BID, QUERY_RESPONSE

KEY = b"\x01" * 32
ring = Keyring()
ring.add(7, KEY)
sender = Sender(7, 7, KEY, 3)
seeds = [
    make_frame(sender, BID, dst=1, auc=1, price=21500, ereq=5000)[0],
    make_frame(sender, BESS_STATUS, erem=1, health=0, volt=48000, dis=-5, soc=5000)[0],
    make_frame(
        sender, QUERY_RESPONSE, etot=1, pct=1, sale=1, erem=1, health=0, volt=1, dis=1, soc=1
    )[0],
]


def mutate(frame):
    data = bytearray(frame)
    choice = random.getrandbits(3)
    if choice == 0:
        return bytes(random.getrandbits(8) for _ in range(random.getrandbits(7)))
    if choice == 1:
        return bytes(data[: random.getrandbits(7) % (len(data) + 1)])
    if choice == 2:
        position = random.getrandbits(7) % len(data)
        return bytes(data[:position]) + bytes([random.getrandbits(8)]) + bytes(data[position:])
    if choice == 3:
        data[random.getrandbits(7) % len(data)] = random.getrandbits(8)
        return bytes(data)
    if choice == 4:
        body = data[:-32]
        body[random.getrandbits(7) % len(body)] = random.getrandbits(8)
        return bytes(body)
    if choice == 5:
        # well-formed CBOR of the wrong shape, correctly sized
        return dumps([random.getrandbits(16) for _ in range(3)]) + bytes(32)
    if choice == 6:
        return bytes(data) + bytes(random.getrandbits(10))
    data[random.getrandbits(7) % len(data)] ^= 1 << (random.getrandbits(3))
    return bytes(data)


accepted = rejected = crashed = 0
for case in range(cases):
    original = seeds[case % len(seeds)]
    frame = mutate(original)
    try:
        decode_frame(frame, ring)
        if frame == original:
            accepted += 1
        else:
            crashed += 1
            print("ACCEPTED MUTATION", frame.hex())
    except ProtocolError as exc:
        if exc.code not in ALL_CODES:
            crashed += 1
            print("UNKNOWN CODE", exc.code)
        rejected += 1
    except Exception as exc:
        crashed += 1
        print("CRASH", type(exc).__name__, exc, frame.hex())
    try:
        cbor.loads(frame)
    except ProtocolError:
        pass
    except Exception as exc:
        crashed += 1
        print("CBOR CRASH", type(exc).__name__, exc, frame.hex())

print("fuzz: %d cases, %d accepted, %d rejected, %d crashed" % (cases, accepted, rejected, crashed))
sys.exit(1 if crashed else 0)
