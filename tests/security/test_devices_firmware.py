"""`etp firmware flash --bundle DIR` on a simulated board (the real firmware on the MicroPython
unix port behind a pty, driven by mpremote): the bundle of `etp device rotate` is copied as it
is, and the board then signs with, and accepts only, its new key generation."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.devices.keys import generation_key
from hub.settings import Settings
from hub.store import Store
from hub.tools.firmware.fleet import FleetConfig, start_fleet
from shared_etp import schema as S
from shared_etp.frame import Sender, derive_key
from tests.firmware.conftest import BOARD_HEAP, MASTER, PLAIN_BOARD
from tests.firmware.fwpeer import Peer

ETP = [sys.executable, "-m", "hub.cli.main"]
pytestmark = [pytest.mark.micropython, pytest.mark.slow]


def etp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the etp command line with the test's data dir."""
    return subprocess.run(
        [*ETP, *args], capture_output=True, text=True, timeout=180, env={**os.environ, **env}
    )


@pytest.mark.timeout(240)
async def test_flash_a_rotated_bundle_onto_a_board(tmp_path: Path) -> None:
    from tests.brokers import embedded_broker

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "master.key").write_text(MASTER.hex() + "\n")
    ca_text = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"
    (data_dir / "pki").mkdir()
    (data_dir / "pki" / "ca.crt").write_text(ca_text)
    env = {"ETP_DATA_DIR": str(data_dir), "ETP_SITE": "tools"}
    async with embedded_broker() as url:
        for args in (("add", "5"), ("rotate", "5", "--out", str(tmp_path / "b5"))):
            made = await asyncio.to_thread(etp, env, "device", *args, "--mqtt-url", url)
            assert made.returncode == 0, made.stderr
        bundle = json.loads((tmp_path / "b5" / "etp_config.json").read_text())
        new_key = generation_key(MASTER, 5, 1)
        assert bundle["key"] == new_key.hex()
        cfg = FleetConfig(
            count=1,
            mqtt_url=url,
            site="tools",
            master_secret=MASTER,
            data_dir=tmp_path / "boards",
            ptys=True,
            heap=BOARD_HEAP,
            overrides=PLAIN_BOARD,
        )
        fleet = await start_fleet(cfg)
        try:
            async with Peer(url, "tools", MASTER) as peer:
                # the peer holds what the hub holds for device 5: its generation-1 key
                peer.keyring.add(5, new_key, owner=5)
                peer._senders[(1001, 5)] = Sender(1001, 5, new_key, peer.epoch)
                await peer.wait_for(lambda m: m["_leaf"] == "birth" and m["_device"] == 1, 20)
                pty = fleet.devices[0].pty
                assert pty is not None
                both = await asyncio.to_thread(
                    etp,
                    env,
                    "firmware",
                    "flash",
                    "--port",
                    pty,
                    "--bundle",
                    str(tmp_path / "b5"),
                    "--key-hex",
                    "00" * 16,
                )
                assert both.returncode == 1 and "leave out --key-hex" in both.stderr
                flashed = await asyncio.to_thread(
                    etp,
                    env,
                    "firmware",
                    "flash",
                    "--port",
                    pty,
                    "--bundle",
                    str(tmp_path / "b5"),
                    "--set",
                    "reserve_mc=31000",
                )
                assert flashed.returncode == 0, flashed.stderr + flashed.stdout
                assert "flashed device 5" in flashed.stdout
                flash_dir = fleet.devices[0].flash_dir
                written = json.loads((flash_dir / "etp_config.json").read_text())
                assert written == {**bundle, "reserve_mc": 31000}
                assert (flash_dir / "mqtt_ca.crt").read_text() == ca_text
                assert written["mqtt_user"] == "bess-5" and written["mqtt_password"]
                # mqtt:// here: the board keeps the CA file but needs it only for mqtts://
                birth = await peer.wait_for(
                    lambda m: m["_leaf"] == "birth" and m["_device"] == 5, 20
                )
                assert birth["kid"] == 5 and birth["sale"] == 31000  # verified: new key
                reply = await peer.request(5, 1001, S.BID, auc=1, price=30000, ereq=10)
                assert reply["reason"] == S.REASON_BELOW_RESERVE  # it took the new key
                # a request under the old (generation-0) key gets no answer
                old = Sender(1002, 5, derive_key(MASTER, 5), peer.epoch)
                frame, _ = old.frame(S.BID, dst=5, auc=2, price=30000, ereq=10)
                answered = len(peer.responses)
                await peer.publish_raw(5, frame)
                await asyncio.sleep(1.5)
                assert [r for r in peer.responses[answered:] if r.get("auc") == 2] == []
        finally:
            await fleet.stop()


@contextlib.asynccontextmanager
async def _mosquitto_two_listeners(password_lines: str) -> AsyncIterator[tuple[str, str]]:
    """Mosquitto with an open listener (the test's peer) and one that takes only the users of
    `password_lines` (the boards); yields (open URL, password URL)."""
    from tests.brokers import MOSQUITTO_BIN, _stop, free_port, wait_listening

    binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
    if binary is None:
        pytest.skip("mosquitto is not installed")
    with tempfile.TemporaryDirectory(prefix="etp-mosq-bundle-") as tmp:
        Path(tmp).chmod(0o755)  # read by Mosquitto after it dropped root
        password_file = Path(tmp) / "passwords"
        password_file.write_text(password_lines)
        password_file.chmod(0o644)
        open_port, closed_port = free_port(), free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"per_listener_settings true\npersistence false\nlog_dest none\n"
            f"listener {open_port} 127.0.0.1\nallow_anonymous true\n"
            f"listener {closed_port} 127.0.0.1\nallow_anonymous false\n"
            f"password_file {password_file}\n"
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await wait_listening(open_port)
            await wait_listening(closed_port)
            yield f"mqtt://127.0.0.1:{open_port}", f"mqtt://127.0.0.1:{closed_port}"
        finally:
            _stop(proc)


@pytest.mark.mosquitto
@pytest.mark.timeout(240)
async def test_a_board_logs_in_to_mosquitto_with_its_bundle(tmp_path: Path) -> None:
    """The bundle's broker login works: Mosquitto, given the stored $7$ hash of bess-5's
    password, lets the board in; a board with another password is kept out."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "master.key").write_text(MASTER.hex() + "\n")
    env = {"ETP_DATA_DIR": str(data_dir), "ETP_SITE": "tools"}
    made = await asyncio.to_thread(etp, env, "device", "add", "5", "--out", str(tmp_path / "b5"))
    assert made.returncode == 0, made.stderr
    async with Store(Settings(data_dir=data_dir).resolved_database_url()) as store:
        [row] = await store.list_device_credentials("tools")
    passwords = f"bess-5:{row.broker_password_hash}\nbess-6:{row.broker_password_hash}\n"
    bundle = json.loads((tmp_path / "b5" / "etp_config.json").read_text())
    async with _mosquitto_two_listeners(passwords) as (open_url, closed_url):
        good = FleetConfig(
            count=1,
            mqtt_url=closed_url,
            site="tools",
            master_secret=MASTER,
            data_dir=tmp_path / "good",
            first_device_id=5,
            heap=BOARD_HEAP,
            ptys=False,
            overrides={**PLAIN_BOARD, **bundle, "mqtt_url": closed_url},
        )
        bad = FleetConfig(
            count=1,
            mqtt_url=closed_url,
            site="tools",
            master_secret=MASTER,
            data_dir=tmp_path / "bad",
            first_device_id=6,
            heap=BOARD_HEAP,
            ptys=False,
            overrides={**PLAIN_BOARD, "mqtt_user": "bess-6", "mqtt_password": "not-the-password"},
        )
        async with Peer(open_url, "tools", MASTER) as peer:
            fleets = [await start_fleet(good), await start_fleet(bad)]
            try:
                birth = await peer.wait_for(
                    lambda m: m["_leaf"] == "birth" and m["_device"] == 5, 30
                )
                assert birth["src"] == 5
                await asyncio.sleep(3)
                assert 6 not in peer.births  # refused by the broker: never got to publish
            finally:
                for fleet in fleets:
                    await fleet.stop()
