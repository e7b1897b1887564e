"""Market notices on real boards (unix port, board heap): each board takes only its own.

(tests/firmware/mp/test_notices.py checks the core's side, run by test_fw_unit.py; here the
deployed node at the board heap, where the notice path must fit beside everything else.)

Also the measurement behind the scheme (firmware/README.md, "Market notices"): an Ed25519
verifier in plain MicroPython against the per-board HMAC the boards use."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared_etp import schema as S
from shared_etp.frame import NOTICE_REPUTATION, derive_key, derive_notice_key, encode_notice
from tests.firmware.conftest import MASTER, REPO, run_micropython
from tests.firmware.test_fw_integration import boards

pytestmark = [pytest.mark.micropython]


def _last_stats(board) -> dict:  # type: ignore[no-untyped-def]
    lines = [
        json.loads(line)
        for line in board.console_log.read_text().splitlines()
        if '"ev": "stats"' in line
    ]
    return lines[-1]["core"] if lines else {}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_boards_take_only_their_own_notices(broker_url: str, tmp_path: Path) -> None:
    """Two boards, each with its own retained notice (published before they boot): each
    shuns the bidder its own notice names, not the other's; forgeries on a board's topic (the
    old site-wide key, another board's key) are refused and counted."""
    from tests.firmware.fwpeer import Peer

    async with Peer(broker_url, "fwtest", MASTER) as hub:
        await hub.notice(1, "reputation", NOTICE_REPUTATION, {1003: 100})
        await hub.notice(2, "reputation", NOTICE_REPUTATION, {1004: 100})
        await asyncio.sleep(0.3)
    async with boards(broker_url, tmp_path, count=2) as (fleet, peer):
        for device, shunned, welcome in ((1, 1003, 1004), (2, 1004, 1003)):
            refused = await peer.request(device, shunned, S.BID, auc=1, price=30000, ereq=100)
            assert refused["reason"] == S.REASON_LOW_REPUTATION, (device, refused)
            accepted = await peer.request(device, welcome, S.BID, auc=2, price=30000, ereq=100)
            assert accepted["t"] == S.BID_ACCEPT, (device, accepted)
        for kid, key in ((0, derive_key(MASTER, 0)), (2, derive_notice_key(MASTER, 2))):
            forged = encode_notice(NOTICE_REPUTATION, {1005: 0}, 0, kid, key)
            await peer.publish_notice(1, "reputation", forged, retain=False)
        for _ in range(100):  # the board's stats line comes every 5 s
            if _last_stats(fleet.devices[0]).get("protocol_errors", {}).get("unknown_key") == 2:
                break
            await asyncio.sleep(0.1)
        stats = _last_stats(fleet.devices[0])
        assert stats["protocol_errors"] == {"unknown_key": 2}, stats
        assert stats["notices"] == 1  # the genuine retained one only
        again = await peer.request(1, 1005, S.BID, auc=3, price=30000, ereq=100)
        assert again["t"] == S.BID_ACCEPT  # the forged "reputation 0" changed nothing


def test_ed25519_alternative_measured(tmp_path: Path) -> None:
    """The plain-MicroPython Ed25519 verifier (firmware/bench_ed25519.py) accepts a real
    signature (made by CPython's `cryptography`) and refuses a forged one; prints its cost
    beside the HMAC notice's: see firmware/README.md for the figures and the decision."""
    private = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    reputation = {100_000 + i: 5000 + 37 * i for i in range(16)}
    notice_key = derive_notice_key(MASTER, 7)
    notice = encode_notice(NOTICE_REPUTATION, reputation, 0, 7, notice_key, ts=1)
    body = notice[:-32]
    vectors = {
        "public": public.hex(),
        "message": body.hex(),
        "signature": private.sign(body).hex(),
        "sha512_abc": hashlib.sha512(b"abc").hexdigest(),
        "device_id": 7,
        "notice_key": notice_key.hex(),
        "notice": notice.hex(),
        "rounds": 3,
    }
    path = tmp_path / "notice_vectors.json"  # where the script looks (its working directory)
    path.write_text(json.dumps(vectors))
    script = REPO / "firmware" / "bench_notice_verify.py"
    # a large heap: one verify allocates ~1.9 MB of garbage, counted with the collector off
    result = run_micropython(
        script, [str(REPO / "firmware"), str(REPO)], tmp_path, heap="8M", timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(figures))
    assert figures["ed25519"]["valid_accepted"] is True
    assert figures["ed25519"]["forged_accepted"] is False
    assert figures["hmac"]["kind"] == NOTICE_REPUTATION
