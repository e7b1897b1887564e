"""Hub-side signing: device and notice keys from the site master secret, signed notices.

Runs on both interpreters (shared_etp.frame re-exports these on CPython); a board never loads
it: it holds its keys, never the master secret, and only reads notices (frame.decode_notice).
"""

from shared_etp.cbor_encode import dumps
from shared_etp.compat import hmac_sha256, now_ms
from shared_etp.errors import OVERSIZED, ProtocolError
from shared_etp.schema import MAX_FRAME_BYTES, PROTOCOL_VERSION


def derive_key(master_secret, kid):
    """Per-key-id HMAC key derived from a site master secret: HMAC(master, "etp/v1/key/<kid>").

    Device N's key is derive_key(master, N); kid 0 is the hub's notice root key (the hub's
    alone: boards get their own notice key, `notice_key`). A board is provisioned with its own
    key and its own notice key only, never the master secret.
    """
    return hmac_sha256(bytes(master_secret), b"etp/v1/key/" + str(kid).encode())


def notice_key(notice_root, device_id):
    """Board `device_id`'s market-notice key: HMAC(notice root, "etp/v1/notice/<id>"), where the
    notice root is derive_key(master, 0), which only the hub holds.

    Only the hub and that board know it: a board can sign only notices that it alone accepts,
    never one for another board (it has no root), and one board's notice is refused by every
    other.
    """
    return hmac_sha256(bytes(notice_root), b"etp/v1/notice/" + str(device_id).encode())


def derive_notice_key(master_secret, device_id):
    """Board `device_id`'s market-notice key from the site master secret (provisioning tools)."""
    return notice_key(derive_key(master_secret, 0), device_id)


def encode_notice(kind, data, src, kid, key, ts=None):
    """Sign a market notice; data holds only integers, lists and integer-keyed maps.

    The hub signs board N's notices with src 0, kid N and `notice_key(root, N)`; kid 0 (the
    root key itself) is the site-wide form boards no longer accept."""
    body = dumps(
        {0: PROTOCOL_VERSION, 1: kind, 2: src, 3: kid, 4: now_ms() if ts is None else ts, 5: data}
    )
    frame = body + hmac_sha256(key, body)
    if len(frame) > MAX_FRAME_BYTES * 8:
        raise ProtocolError(OVERSIZED, "notice of %d bytes is too large" % len(frame))
    return frame
