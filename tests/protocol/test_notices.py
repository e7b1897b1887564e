"""Per-board market notices: keys, the hub's signer, topics, and what a board refuses."""

from __future__ import annotations

import pytest

from hub.auctions.notices import NoticeSigner, publish_notices
from hub.buyers.bidding import Buyers
from shared_etp import errors
from shared_etp.errors import ProtocolError
from shared_etp.frame import (
    NOTICE_CLEARING,
    NOTICE_REPUTATION,
    Keyring,
    decode_notice,
    derive_key,
    derive_notice_key,
    encode_notice,
    notice_key,
)
from shared_etp.topics import notice_topic

MASTER = b"m" * 32
ROOT = derive_key(MASTER, 0)


def board_ring(device_id: int) -> Keyring:
    """What board `device_id` verifies notices with (firmware/etp_node/core.py)."""
    ring = Keyring()
    ring.add(device_id, derive_notice_key(MASTER, device_id), owner=0)
    return ring


def test_each_board_has_its_own_notice_key() -> None:
    keys = {derive_notice_key(MASTER, device) for device in range(1, 200)}
    assert len(keys) == 199
    # neither the root nor any device (frame) key is a notice key
    assert not keys & {derive_key(MASTER, kid) for kid in range(0, 200)}
    assert notice_key(ROOT, 7) == derive_notice_key(MASTER, 7)
    assert derive_notice_key(b"n" * 32, 7) != derive_notice_key(MASTER, 7)


@pytest.mark.parametrize("device_id", [1, 23, 24, 255, 256, 65535])
@pytest.mark.parametrize(
    ("kind", "data"),
    [
        (NOTICE_REPUTATION, {100001: 9500, 100002: 0, 5: 10000}),
        (NOTICE_REPUTATION, {}),
        (NOTICE_CLEARING, [21000, 22000, 2**31]),
        (NOTICE_CLEARING, []),
    ],
)
def test_hub_signer_makes_encode_notice_bytes(device_id: int, kind: int, data: object) -> None:
    """The hub's shared-encoding fast path is byte for byte the reference encoder's."""
    frames = NoticeSigner(ROOT).sign(kind, data, [device_id], ts=1_795_500_000_000)
    reference = encode_notice(
        kind, data, 0, device_id, derive_notice_key(MASTER, device_id), ts=1_795_500_000_000
    )
    assert frames == {device_id: reference}
    assert decode_notice(reference, board_ring(device_id)) == (kind, 1_795_500_000_000, data)


def test_a_board_refuses_every_notice_but_its_own() -> None:
    frames = NoticeSigner(ROOT).sign(NOTICE_REPUTATION, {1001: 100}, [7, 8], ts=5)
    assert decode_notice(frames[7], board_ring(7))[2] == {1001: 100}
    refusals = {
        "another board's notice": (frames[8], errors.UNKNOWN_KEY),
        "the old site-wide notice": (
            encode_notice(NOTICE_REPUTATION, {1001: 100}, 0, 0, ROOT, ts=5),
            errors.UNKNOWN_KEY,
        ),
        "another board's key, this board's kid": (
            encode_notice(NOTICE_REPUTATION, {1001: 100}, 0, 7, derive_notice_key(MASTER, 8)),
            errors.BAD_TAG,
        ),
        "a board as sender": (
            encode_notice(NOTICE_REPUTATION, {1001: 100}, 8, 7, derive_notice_key(MASTER, 7)),
            errors.UNKNOWN_KEY,
        ),
    }
    for what, (frame, code) in refusals.items():
        with pytest.raises(ProtocolError) as refused:
            decode_notice(frame, board_ring(7))
        assert refused.value.code == code, what


def test_oversized_notice_is_not_signed() -> None:
    huge = {100_000 + i: 10_000 for i in range(1000)}
    with pytest.raises(ProtocolError) as info:
        NoticeSigner(ROOT).sign(NOTICE_REPUTATION, huge, [7], ts=5)
    assert info.value.code == errors.OVERSIZED


class Recorder:
    """A Publisher test double: keeps what would go to the broker."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int, bool]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.sent.append((topic, payload, qos, retain))


def test_publish_notices_sends_each_board_its_own_retained_pair() -> None:
    link = Recorder()
    buyers = Buyers([])
    signer = NoticeSigner(ROOT)
    count = publish_notices(link, "site1", signer, buyers, [3, 4])
    assert count == 4
    # the first round deletes the first version's retained site-wide notices, once
    cleared = [(t, p) for t, p, _, retain in link.sent if retain and p == b""]
    assert cleared == [
        ("etp/v1/site1/market/reputation", b""),
        ("etp/v1/site1/market/clearing", b""),
    ]
    link.sent = [sent for sent in link.sent if sent[1]]
    assert {(topic, qos, retain) for topic, _, qos, retain in link.sent} == {
        (notice_topic("site1", device, leaf), 1, True)
        for device in (3, 4)
        for leaf in ("reputation", "clearing")
    }
    for topic, frame, _, _ in link.sent:
        device = int(topic.split("/")[4])
        kind, _, _ = decode_notice(frame, board_ring(device))
        assert kind == (NOTICE_REPUTATION if topic.endswith("reputation") else NOTICE_CLEARING)
    assert notice_topic("site1", 3, "clearing") == "etp/v1/site1/market/3/clearing"
    link.sent = []
    assert publish_notices(link, "site1", signer, buyers, [3]) == 2
    assert all(payload for _, payload, _, _ in link.sent)  # nothing to delete any more


def test_the_reputation_view_shapes_every_boards_notice() -> None:
    """What the settlement's ledger view makes of the hub's figures is what each board reads."""
    link = Recorder()
    buyers = Buyers([])
    publish_notices(
        link, "site1", NoticeSigner(ROOT), buyers, [3, 4], lambda scores: {**scores, 1001: 0}
    )
    boards = []
    for topic, frame, _, _ in link.sent:
        if frame and topic.endswith("/reputation"):  # (empty: the site-wide one deleted)
            device = int(topic.split("/")[4])
            assert decode_notice(frame, board_ring(device))[2] == {1001: 0}
            boards.append(device)
    assert boards == [3, 4]
