"""Firmware tooling: .mpy build, pty-bridged simulated board driven by mpremote, `etp firmware
flash` and `etp firmware audit` against it, and `etp bench firmware`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from hub.tools.firmware.fleet import FleetConfig, start_fleet
from shared_etp import schema as S
from shared_etp.frame import derive_key, derive_notice_key
from tests.firmware.conftest import BOARD_HEAP, MASTER, PLAIN_BOARD
from tests.firmware.fwpeer import Peer

ETP = [sys.executable, "-m", "hub.cli.main"]
MPREMOTE = str(Path(sys.executable).parent / "mpremote")
pytestmark = [pytest.mark.micropython]


def test_build_image_is_mpy(mpy_image: Path) -> None:
    """The image holds main.py and .mpy modules only (no sources to compile on the board)."""
    files = {p.relative_to(mpy_image).as_posix() for p in mpy_image.rglob("*") if p.is_file()}
    assert "main.py" in files and "firmware/etp_node/core.mpy" in files
    assert "shared_etp/frame.mpy" in files
    assert not [f for f in files if f.endswith(".py") and f != "main.py"]


def etp(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the etp command line."""
    return subprocess.run([*ETP, *args], capture_output=True, text=True, timeout=timeout)


def mpremote(pty: str, *args: str) -> subprocess.CompletedProcess:
    """Run mpremote against a (simulated) board."""
    return subprocess.run([MPREMOTE, "connect", pty, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.slow
@pytest.mark.timeout(180)
async def test_mpremote_flash_and_audit_on_simulated_board(tmp_path: Path) -> None:
    """A simulated board answers mpremote like a serial board; flash re-provisions it."""
    from tests.brokers import embedded_broker

    async with embedded_broker() as url:
        cfg = FleetConfig(count=1, mqtt_url=url, site="tools", master_secret=MASTER,
                          data_dir=tmp_path, ptys=True, heap=BOARD_HEAP, overrides=PLAIN_BOARD)
        fleet = await start_fleet(cfg)
        try:
            async with Peer(url, "tools", MASTER) as peer:
                await peer.wait_for(lambda m: m["_leaf"] == "birth" and m["_device"] == 1, 20)
                pty = fleet.devices[0].pty
                assert pty is not None
                listing = await asyncio.to_thread(mpremote, pty, "exec",
                                                  "import os; print(sorted(os.listdir()))")
                assert listing.returncode == 0, listing.stderr
                assert "etp_config.json" in listing.stdout and "main.py" in listing.stdout

                audit = await asyncio.to_thread(etp, "firmware", "audit", "--port", pty, "--json")
                assert audit.returncode == 0, audit.stderr
                report = json.loads(audit.stdout)
                assert report["torn"] == 0 and report["kinds"].get("boot", 0) >= 1

                key = derive_key(MASTER, 5).hex()
                ca = tmp_path / "ca.pem"
                ca.write_text("-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n")
                flashed = await asyncio.to_thread(
                    etp, "firmware", "flash", "--port", pty, "--device-id", "5", "--key-hex", key,
                    "--notice-key-hex", derive_notice_key(MASTER, 5).hex(), "--site", "tools",
                    "--mqtt-url", url, "--set", "reserve_mc=31000", "--set", "capacity_wh=7000",
                    "--ca-file", str(ca),
                )
                assert flashed.returncode == 0, flashed.stderr + flashed.stdout
                flash_dir = fleet.devices[0].flash_dir
                assert (flash_dir / "mqtt_ca.crt").read_text() == ca.read_text()
                written = json.loads((flash_dir / "etp_config.json").read_text())
                assert written["device_id"] == 5 and written["mqtt_ca_file"] == "mqtt_ca.crt"
                birth = await peer.wait_for(lambda m: m["_leaf"] == "birth" and m["_device"] == 5,
                                            20)
                assert birth["sale"] == 31000 and birth["etot"] == 7000
                reply = await peer.request(5, 1001, S.BID, auc=1, price=30000, ereq=10)
                assert reply["reason"] == S.REASON_BELOW_RESERVE
        finally:
            await fleet.stop()


@pytest.mark.slow
def test_bench_firmware_prints_numbers() -> None:
    """`etp bench firmware --json --heap 64K` reports heap use and handling times from
    MicroPython, and the deployed node trades through a broker in 64K without losing a frame."""
    result = etp(
        "bench", "firmware", "--json", "--heap", "64K", "--rounds", "100", "--round-trips", "200"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["stats"]["trades"] == 100 and data["stats"]["accepted"] == 100
    assert not data["stats"]["dropped"] and not data["dropped"]
    assert data["heap_code_bytes"] > 10000
    assert data["times_us"]["3"]["n"] == 128 and data["times_us"]["3"]["median"] > 0
    # The node's modules load in about 64K (a regression in code size shows here).
    assert data["boots_in_64k"] is True and 32 <= data["min_boot_heap_k"] <= 64
    trip = data["round_trip"]
    assert trip["n"] == 200 and not trip["unanswered"] and not trip["wrong_answers"]
    assert trip["times_ms"]["bid_confirm"]["n"] == 50
    assert 0 < trip["times_ms"]["query"]["median"] < 500
    board = trip["board"]  # its own counters: every frame handled, none lost to the heap
    assert board["handled"] == 200 and board["trades"] == 50 and not board["dropped"]
    assert board["heap_alloc"] + board["heap_free"] <= 64 * 1024


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_etp_firmware_sim_command(tmp_path: Path) -> None:
    """`etp firmware sim` starts boards behind ptys that connect and register."""
    import os

    from hub.settings import load_master_secret
    from tests.brokers import embedded_broker

    async with embedded_broker() as url:
        env = dict(os.environ, ETP_DATA_DIR=str(tmp_path))
        proc = await asyncio.create_subprocess_exec(
            *ETP, "firmware", "sim", "--count", "2", "--mqtt-url", url, "--site", "simcmd",
            "--heap", BOARD_HEAP, "--duration", "8", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            for _ in range(100):
                if (tmp_path / "master.key").exists():
                    break
                await asyncio.sleep(0.05)
            master = load_master_secret(tmp_path / "master.key")
            async with Peer(url, "simcmd", master) as peer:
                for device in (1, 2):
                    await peer.wait_for(lambda m, d=device: m["_leaf"] == "birth"
                                        and m["_device"] == d, 20)
            out, err = await asyncio.wait_for(proc.communicate(), 30)
        finally:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "2 boards" in text and "/board-1/tty" in text and "boards stopped" in text
