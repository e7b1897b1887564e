"""Benchmark (unix port): what verifying one market notice costs a board, two ways.

Run:  MICROPYPATH=firmware:. micropython -X heapsize=8M firmware/bench_notice_verify.py V.json
[once]   (V.json, default ./notice_vectors.json: an Ed25519 signature by CPython's
`cryptography` and a notice; `tests/firmware/test_notices.py` writes one and runs this). Prints
one JSON line; with `once`, only Ed25519: one verify then three timed, with the free heap before
them (run it in smaller and smaller -X heapsize to find the least it runs in).

- "hmac": the scheme the boards use (a notice HMAC'd with the board's own notice key):
  `frame.decode_notice` as the node calls it.
- "ed25519": the alternative that was measured and not adopted: a hub signature every board
  checks with the hub's public key (`bench_ed25519.py`, plain MicroPython: the port has no
  SHA-512, Ed25519 or ECDSA API).

Heap: `code_bytes` is what importing the verifier leaves allocated (from source, or from
an .mpy put first on MICROPYPATH), `alloc_per_verify_bytes` is everything one verify allocates
with the collector off (garbage the board's GC must then reclaim; -1: more than the heap had
free, run with a larger -X heapsize to see it).
"""

import gc
import json
import sys
import time

gc.collect()
_BASE = gc.mem_alloc()

from bench_ed25519 import ed25519_verify, sha512  # noqa: E402

gc.collect()
_CODE = gc.mem_alloc() - _BASE


def _timed(fn, rounds):
    gc.collect()
    start = time.ticks_us()
    for _ in range(rounds):
        ok = fn()
    return time.ticks_diff(time.ticks_us(), start) / rounds / 1000.0, ok


def _alloc(fn):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    try:
        fn()
        used = gc.mem_alloc() - before
    except MemoryError:  # more than the heap's free room: run with a larger -X heapsize
        used = -1
    gc.enable()
    gc.collect()
    return used


def main(path):
    with open(path) as handle:
        vectors = json.load(handle)
    public = bytes.fromhex(vectors["public"])
    message = bytes.fromhex(vectors["message"])
    signature = bytes.fromhex(vectors["signature"])
    if len(sys.argv) > 2:  # "once": one verify, nothing else (the smallest heap it runs in)
        gc.collect()
        free = gc.mem_free()
        first = ed25519_verify(public, message, signature)
        ms, again = _timed(lambda: ed25519_verify(public, message, signature), 3)
        print(json.dumps({"valid": first and again, "free_before_bytes": free, "verify_ms": ms}))
        return
    sha512(b"")  # the round constants are made on first use, not timed
    bad = bytearray(signature)
    bad[40] ^= 1
    result = {"ed25519": {"code_bytes": _CODE}}
    assert sha512(b"abc").hex() == vectors["sha512_abc"]
    rounds = vectors.get("rounds", 5)
    ms, ok = _timed(lambda: ed25519_verify(public, message, signature), rounds)
    result["ed25519"]["verify_ms"] = ms
    result["ed25519"]["valid_accepted"] = ok
    result["ed25519"]["forged_accepted"] = ed25519_verify(public, message, bytes(bad))
    result["ed25519"]["sha512_ms"] = _timed(lambda: sha512(message), rounds)[0]
    result["ed25519"]["alloc_per_verify_bytes"] = _alloc(
        lambda: ed25519_verify(public, message, signature)
    )
    from shared_etp.frame import Keyring, decode_notice

    ring = Keyring()
    ring.add(vectors["device_id"], bytes.fromhex(vectors["notice_key"]), owner=0)
    notice = bytes.fromhex(vectors["notice"])
    hmac_ms, decoded = _timed(lambda: decode_notice(notice, ring), rounds * 20)
    result["hmac"] = {
        "verify_ms": hmac_ms,
        "kind": decoded[0],
        "alloc_per_verify_bytes": _alloc(lambda: decode_notice(notice, ring)),
        "notice_bytes": len(notice),
    }
    print(json.dumps(result))


main(sys.argv[1] if len(sys.argv) > 1 else "notice_vectors.json")
