"""Ed25519 signature verification in plain MicroPython: measured for market notices, not used.

MicroPython has no SHA-512, Ed25519 or ECDSA API (hashlib: md5/sha1/sha256; cryptolib: AES;
tls: only inside the handshake), so both SHA-512 and the curve arithmetic are written here,
from RFC 6234 and RFC 8032 section 5.1.7 (cofactorless check [S]B == R + [k]A, Straus'
simultaneous double-and-add, extended twisted Edwards coordinates). `bench_notice_verify.py`
times it against the HMAC notice the boards verify (see firmware/README.md, "Market notices").
"""

# ---- SHA-512 (RFC 6234) -------------------------------------------------------------------
_M64 = 0xFFFFFFFFFFFFFFFF
_K512 = None


def _k512():
    # The first 64 bits of the fractional parts of the cube roots of the first 80 primes,
    # computed rather than tabulated: integer cube root of p * 2^192, low 64 bits.
    primes = []
    n = 2
    while len(primes) < 80:
        if all(n % q for q in primes if q * q <= n):
            primes.append(n)
        n += 1
    out = []
    for prime in primes:
        target = prime << 192
        root = 1 << 70  # above the cube root of every prime below 2^18 times 2^192
        while True:  # Newton's method, from above
            nxt = (2 * root + target // (root * root)) // 3
            if nxt >= root:
                break
            root = nxt
        while root * root * root > target:
            root -= 1
        out.append(root & _M64)
    return out


def _sqrt_frac(prime):
    # first 64 bits of the fractional part of sqrt(prime): isqrt(prime * 2^128) mod 2^64
    target = prime << 128
    root = 1 << 70  # above the square root of every prime below 2^12 times 2^128
    while True:
        nxt = (root + target // root) // 2
        if nxt >= root:
            break
        root = nxt
    return root & _M64


def _rotr(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def sha512(data):
    global _K512
    if _K512 is None:
        _K512 = _k512()
    k = _K512
    h = [_sqrt_frac(p) for p in (2, 3, 5, 7, 11, 13, 17, 19)]
    length = len(data)
    data = bytes(data) + b"\x80" + bytes((111 - length) % 128) + (length * 8).to_bytes(16, "big")
    for block in range(0, len(data), 128):
        w = [int.from_bytes(data[block + 8 * i : block + 8 * i + 8], "big") for i in range(16)]
        for i in range(16, 80):
            a, b = w[i - 15], w[i - 2]
            s0 = _rotr(a, 1) ^ _rotr(a, 8) ^ (a >> 7)
            s1 = _rotr(b, 19) ^ _rotr(b, 61) ^ (b >> 6)
            w.append((w[i - 16] + s0 + w[i - 7] + s1) & _M64)
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            t1 = (
                hh
                + (_rotr(e, 14) ^ _rotr(e, 18) ^ _rotr(e, 41))
                + ((e & f) ^ ((e ^ _M64) & g))
                + k[i]
                + w[i]
            ) & _M64
            t2 = (_rotr(a, 28) ^ _rotr(a, 34) ^ _rotr(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e, d, c, b, a = g, f, e, (d + t1) & _M64, c, b, a, (t1 + t2) & _M64
        h = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    return b"".join(x.to_bytes(8, "big") for x in h)


# ---- Ed25519 verification (RFC 8032 section 5.1) --------------------------------------------
_P = (1 << 255) - 19
_L = (1 << 252) + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_D2 = (2 * _D) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def _add(p1, p2):
    x1, y1, z1, t1 = p1
    x2, y2, z2, t2 = p2
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _double(p1):
    x1, y1, z1, _ = p1
    a = x1 * x1 % _P
    b = y1 * y1 % _P
    c = 2 * z1 * z1 % _P
    h = a + b
    e = h - (x1 + y1) * (x1 + y1) % _P
    g = a - b
    f = c + g
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _decode_point(raw):
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    vx2 = v * x * x % _P
    if vx2 != u:
        if vx2 != _P - u:
            return None
        x = x * _SQRT_M1 % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


_B = _decode_point(bytes([0x58]) + bytes([0x66]) * 31)


def ed25519_verify(public, message, signature):
    """True if `signature` (64 bytes) is `public`'s (32 bytes) Ed25519 signature of `message`."""
    if len(public) != 32 or len(signature) != 64:
        return False
    a = _decode_point(public)
    r = _decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= _L:
        return False
    k = int.from_bytes(sha512(signature[:32] + public + message), "little") % _L
    neg_a = ((_P - a[0]) % _P, a[1], a[2], (_P - a[3]) % _P)
    both = _add(_B, neg_a)
    acc = (0, 1, 1, 0)
    for bit in range(252, -1, -1):  # s, k < L < 2^253
        acc = _double(acc)
        sb, kb = (s >> bit) & 1, (k >> bit) & 1
        if sb and kb:
            acc = _add(acc, both)
        elif sb:
            acc = _add(acc, _B)
        elif kb:
            acc = _add(acc, neg_a)
    # acc = [S]B - [k]A; compare with R projectively
    return (acc[0] - r[0] * acc[2]) % _P == 0 and (acc[1] - r[1] * acc[2]) % _P == 0
