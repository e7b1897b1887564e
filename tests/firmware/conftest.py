"""Fixtures for firmware tests: MicroPython runner, the .mpy image, brokers, a board fleet."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.tools.firmware.binaries import micropython_binary
from hub.tools.firmware.build import build
from tests.brokers import embedded_broker, mosquitto_available, mosquitto_broker

MP_DIR = Path(__file__).parent / "mp"
collect_ignore = ["mp"]  # MicroPython scripts, run by test_fw_unit.py on the unix port
REPO = Path(__file__).resolve().parents[2]
MASTER = b"firmware-test-master-secret-01"


def run_micropython(script: Path, path: list[str], tmp: Path, heap: str | None = None,
                    timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a script on the unix port with MICROPYPATH=path (frozen modules first)."""
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", *path]), ETP_TEST_TMP=str(tmp))
    cmd = [micropython_binary()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    return subprocess.run([*cmd, str(script)], capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=str(tmp))


@pytest.fixture(scope="session")
def mpy_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The firmware compiled to .mpy (the flash image boards run)."""
    return build(tmp_path_factory.mktemp("fwbuild"))


@pytest.fixture(params=["amqtt", "mosquitto"])
async def broker_url(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A real broker: the embedded amqtt one, then Mosquitto."""
    if request.param == "mosquitto":
        if not mosquitto_available():
            pytest.skip("mosquitto is not installed (scripts/setup.sh installs it)")
        async with mosquitto_broker() as url:
            yield url
    else:
        async with embedded_broker() as url:
            yield url


# 64K: every firmware test passes there, the three TLS ones too (TLS is the tightest: boot and
# the handshake beside the ~3.1 KB TLS context). See firmware/README.md, Memory.
BOARD_HEAP = os.environ.get("ETP_TEST_BOARD_HEAP", "64K")

# A board whose figures the tests can reason about: 10 kWh full, half of it (less a 500 Wh
# floor) for sale at a 200 c/kWh (20000 mc) static reserve.
PLAIN_BOARD = {
    "capacity_wh": 10000,
    "soc_start": 10000,
    "pct_for_sale": 5000,
    "floor_wh": 500,
    "reserve_mc": 20000,
    "dynamic_reserve": False,
    "status_interval_ms": 1000,
}
