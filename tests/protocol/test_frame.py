"""Frames: round trips, authentication, key binding, freshness, replay, every rejection code."""

import pytest

from shared_etp import errors
from shared_etp.errors import ProtocolError
from shared_etp.frame import (
    NOTICE_CLEARING,
    NOTICE_REPUTATION,
    Keyring,
    Receiver,
    Sender,
    check_fresh,
    decode_frame,
    decode_notice,
    derive_key,
    encode_notice,
)
from shared_etp.replay import WINDOW, ReplayGuard, next_epoch
from shared_etp.schema import (
    BID,
    BID_REJECT,
    DEADLINE_MS,
    DEVICE_FAILURE,
    PRIORITY,
    QUERY,
    REASON_BELOW_RESERVE,
)

MASTER = b"m" * 32
DEVICE = 7
KEY = derive_key(MASTER, DEVICE)


def clock_at(ms):
    return lambda: ms


def keyring(owner=None):
    ring = Keyring()
    ring.add(DEVICE, KEY, owner=owner)
    return ring


def bidder(now=1_000_000, epoch=5):
    return Sender(1001, DEVICE, KEY, epoch, clock=clock_at(now))


def test_round_trip_fills_header_and_verifies():
    frame, msg = bidder().frame(BID, dst=DEVICE, auc=42, price=21500, ereq=5000)
    decoded = decode_frame(frame, keyring())
    assert decoded == msg
    assert decoded["pri"] == PRIORITY[BID] and decoded["src"] == 1001 and decoded["seq"] == 0


def test_sequence_advances_and_ids_echo():
    sender = bidder()
    _, first = sender.frame(QUERY, dst=DEVICE)
    _, second = sender.frame(BID_REJECT, dst=1001, msg_id=first["id"], auc=1, reason=1)
    assert (first["seq"], second["seq"]) == (0, 1)
    assert second["id"] == first["id"]


def test_derived_keys_differ_per_device():
    assert derive_key(MASTER, 1) != derive_key(MASTER, 2)
    assert len(derive_key(MASTER, 1)) == 32


def test_wrong_key_is_bad_tag():
    frame, _ = bidder().frame(BID, dst=DEVICE, auc=1, price=1, ereq=1)
    ring = Keyring()
    ring.add(DEVICE, derive_key(MASTER, 8))
    with pytest.raises(ProtocolError) as info:
        decode_frame(frame, ring)
    assert info.value.code == errors.BAD_TAG


def test_every_single_bit_flip_is_rejected():
    frame, _ = bidder().frame(BID, dst=DEVICE, auc=1, price=21500, ereq=5000)
    for index in range(len(frame)):
        for bit in range(8):
            mutated = bytearray(frame)
            mutated[index] ^= 1 << bit
            with pytest.raises(ProtocolError):
                decode_frame(bytes(mutated), keyring())


def test_key_bound_to_owner_rejects_other_senders():
    frame, _ = bidder().frame(BID, dst=DEVICE, auc=1, price=1, ereq=1)
    with pytest.raises(ProtocolError) as info:
        decode_frame(frame, keyring(owner=DEVICE))
    assert info.value.code == errors.UNKNOWN_KEY
    own, _ = Sender(DEVICE, DEVICE, KEY, 1).frame(DEVICE_FAILURE, health=2, reason=8)
    assert decode_frame(own, keyring(owner=DEVICE))["t"] == DEVICE_FAILURE


def test_short_keys_are_refused():
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Keyring().add(1, b"short")


def test_encode_validates_before_signing():
    sender = bidder()
    with pytest.raises(ProtocolError) as info:
        sender.frame(BID, dst=DEVICE, auc=1, price=1)  # no ereq
    assert info.value.code == errors.MISSING_FIELD
    with pytest.raises(ProtocolError) as info:
        sender.frame(BID, dst=DEVICE, auc=1, price=-1, ereq=1)
    assert info.value.code == errors.OUT_OF_RANGE
    with pytest.raises(ProtocolError) as info:
        sender.frame(BID, dst=DEVICE, auc=1, price=1.5, ereq=1)
    assert info.value.code == errors.WRONG_TYPE
    with pytest.raises(ProtocolError) as info:
        sender.frame(BID, dst=DEVICE, auc=1, price=True, ereq=1)
    assert info.value.code == errors.WRONG_TYPE
    with pytest.raises(ProtocolError) as info:
        sender.frame(BID, dst=DEVICE, auc=1, price=1, ereq=1, colour=3)
    assert info.value.code == errors.UNKNOWN_FIELD


def test_freshness_uses_ttl_then_type_deadline():
    _, msg = bidder(now=10_000).frame(BID, dst=DEVICE, ttl=3000, auc=1, price=1, ereq=1)
    check_fresh(msg, 10_000 + 3000 + 500, max_skew_ms=500)
    with pytest.raises(ProtocolError) as info:
        check_fresh(msg, 10_000 + 3000 + 501, max_skew_ms=500)
    assert info.value.code == errors.EXPIRED
    with pytest.raises(ProtocolError) as info:
        check_fresh(msg, 10_000 - 501, max_skew_ms=500)
    assert info.value.code == errors.FROM_FUTURE
    _, failure = bidder(now=10_000).frame(DEVICE_FAILURE, ttl=0, health=2, reason=8)
    check_fresh(failure, 10_000 + DEADLINE_MS[DEVICE_FAILURE], max_skew_ms=0)
    with pytest.raises(ProtocolError):
        check_fresh(failure, 10_000 + DEADLINE_MS[DEVICE_FAILURE] + 1, max_skew_ms=0)


def test_receiver_rejects_replay_and_counts_reasons():
    sender = bidder(now=50_000)
    receiver = Receiver(keyring(), clock=clock_at(50_000))
    frame, _ = sender.frame(BID, dst=DEVICE, auc=1, price=1, ereq=1)
    receiver.open(frame)
    with pytest.raises(ProtocolError) as info:
        receiver.open(frame)
    assert info.value.code == errors.REPLAY
    with pytest.raises(ProtocolError):
        receiver.open(b"\xff" * 40)
    assert receiver.accepted == 1
    assert receiver.rejected == {errors.REPLAY: 1, errors.WRONG_TYPE: 1}


def test_forged_frames_do_not_advance_the_replay_window():
    sender = bidder(now=50_000)
    receiver = Receiver(keyring(), clock=clock_at(50_000))
    forger = Sender(1001, DEVICE, derive_key(MASTER, 99), 5, clock=clock_at(50_000))
    forger.seq = 1000
    with pytest.raises(ProtocolError):
        receiver.open(forger.frame(BID, dst=DEVICE, auc=1, price=1, ereq=1)[0])
    receiver.open(sender.frame(BID, dst=DEVICE, auc=1, price=1, ereq=1)[0])


def test_reordering_within_window_is_tolerated():
    guard = ReplayGuard()
    for seq in (5, 3, 4, 1, 40, 11):
        guard.check(1, 1, seq)
    for seq in (5, 40, 11):
        with pytest.raises(ProtocolError) as info:
            guard.check(1, 1, seq)
        assert info.value.code == errors.REPLAY
    with pytest.raises(ProtocolError) as info:
        guard.check(1, 1, 2)  # 38 behind the highest: outside the 30-frame window
    assert info.value.code == errors.REPLAY


def test_window_edges_survive_long_jumps():
    """WINDOW - 1 behind is still accepted once, WINDOW behind is not; bits move with jumps."""
    guard = ReplayGuard()
    guard.check(1, 1, 100)
    guard.check(1, 1, 100 - (WINDOW - 1))
    for seq in (100 - (WINDOW - 1), 100 - WINDOW):
        with pytest.raises(ProtocolError):
            guard.check(1, 1, seq)
    guard.check(1, 1, 110)  # a jump of 10: 100 is now 10 behind and still known
    with pytest.raises(ProtocolError):
        guard.check(1, 1, 100)
    guard.check(1, 1, 105)
    guard.check(1, 1, 500)  # past the window: the bitmap starts afresh
    with pytest.raises(ProtocolError):
        guard.check(1, 1, 110)
    guard.check(1, 1, 499)


def test_rebooted_sender_is_not_locked_out_but_old_epoch_is():
    guard = ReplayGuard()
    guard.check(7, next_epoch(0, 0), 500)
    rebooted = next_epoch(1, 0)  # flash kept epoch 1, no clock
    guard.check(7, rebooted, 0)
    with pytest.raises(ProtocolError) as info:
        guard.check(7, 1, 501)
    assert info.value.code == errors.STALE_EPOCH


def test_epoch_survives_lost_flash_when_clock_is_set():
    first_boot = next_epoch(0, 1_795_000_000)
    # flash write of the epoch was lost, but the clock moved on: still a higher epoch
    assert next_epoch(0, 1_795_000_100) > first_boot
    # clock not set (1970) but flash works: still higher
    assert next_epoch(first_boot, 10) == first_boot + 1


def test_replay_guard_is_bounded():
    guard = ReplayGuard(max_senders=3)
    for src in range(10):
        guard.check(src, 1, 0)
    assert len(guard) == 3


def test_notices_round_trip_and_reject_tampering():
    notice_key = derive_key(MASTER, 0)
    ring = Keyring()
    ring.add(0, notice_key, owner=0)
    frame = encode_notice(NOTICE_REPUTATION, {1001: 9500, 1002: 4000}, 0, 0, notice_key, ts=5)
    assert decode_notice(frame, ring) == (NOTICE_REPUTATION, 5, {1001: 9500, 1002: 4000})
    clearing = encode_notice(NOTICE_CLEARING, [21000, 22000], 0, 0, notice_key)
    assert decode_notice(clearing, ring)[2] == [21000, 22000]
    with pytest.raises(ProtocolError) as info:
        decode_notice(frame[:-1] + bytes([frame[-1] ^ 1]), ring)
    assert info.value.code == errors.BAD_TAG


def test_reject_reason_round_trips():
    frame, _ = bidder().frame(BID_REJECT, dst=1001, auc=9, reason=REASON_BELOW_RESERVE)
    assert decode_frame(frame, keyring())["reason"] == REASON_BELOW_RESERVE
