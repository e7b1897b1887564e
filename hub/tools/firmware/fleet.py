"""A fleet of simulated boards: the real firmware on the MicroPython unix port, one process each.

Each board gets a flash directory (the firmware image, its config with its own device key,
its state and audit files) and, with ptys, a pseudo-terminal bridged like a serial board so
`mpremote connect <pty> ...` works against it (see ptybridge.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from hub.tools.firmware.binaries import micropython_binary
from hub.tools.firmware.build import build, install_image
from shared_etp.frame import derive_key, derive_notice_key


class FleetError(RuntimeError):
    """A simulated board could not be provisioned or started."""


@dataclass
class FleetConfig:
    """What to start: how many boards, where the broker is, which site and secret."""

    count: int
    mqtt_url: str
    site: str
    master_secret: bytes
    data_dir: Path
    first_device_id: int = 1
    ptys: bool = True
    heap: str = "80K"
    use_mpy: bool = True
    seed: int = 1
    overrides: dict | None = None


@dataclass
class SimBoard:
    """One running simulated board."""

    device_id: int
    pid: int
    pty: str | None
    flash_dir: Path
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    @property
    def console_log(self) -> Path:
        """The board's console output (JSON lines from the node)."""
        return self.flash_dir / "console.log"

    def inject_fault(self, name: str) -> None:
        """Ask the board's battery model for a fault (undervolt, overvolt, overtemp, clear)."""
        (self.flash_dir / "etp_fault").write_text(name)


def board_config(cfg: FleetConfig, device_id: int, rng: random.Random) -> dict:
    """The config dict a board is provisioned with: own key, own notice key, varied battery."""
    config = {
        "device_id": device_id,
        "site": cfg.site,
        "key": derive_key(cfg.master_secret, device_id).hex(),
        "notice_key": derive_notice_key(cfg.master_secret, device_id).hex(),
        "mqtt_url": cfg.mqtt_url,
        # commercial storage sizes (kWh): 30, 50, 100, 200
        "capacity_wh": rng.choice((30000, 50000, 100000, 200000)),
        "soc_start": rng.randrange(6000, 9600, 100),
        "reserve_mc": rng.randrange(15000, 25001, 500),
        "pct_for_sale": rng.randrange(5000, 9001, 500),
        "seed": rng.randrange(1, 1 << 30),
    }
    config.update(cfg.overrides or {})
    for name in ("key", "notice_key"):
        if isinstance(config[name], bytes | bytearray):
            config[name] = config[name].hex()
    return config


def provision(cfg: FleetConfig, device_id: int, rng: random.Random, image: Path) -> Path:
    """Create a board's flash dir: firmware image plus etp_config.json. Returns the dir."""
    flash = Path(cfg.data_dir) / f"board-{device_id}"
    flash.mkdir(parents=True, exist_ok=True)
    install_image(image, flash)
    (flash / "etp_config.json").write_text(json.dumps(board_config(cfg, device_id, rng)))
    return flash


def board_command(heap: str) -> list[str]:
    """The command that boots a board in its flash directory."""
    return [micropython_binary(), "-X", f"heapsize={heap}", "main.py"]


class Fleet:
    """Running simulated boards."""

    def __init__(self, devices: list[SimBoard]):
        self.devices = devices

    def alive(self) -> int:
        """How many board processes are still running."""
        return sum(
            1 for d in self.devices if d.process is not None and d.process.returncode is None
        )

    def by_id(self, device_id: int) -> SimBoard:
        """The board with this device id."""
        for device in self.devices:
            if device.device_id == device_id:
                return device
        raise KeyError(f"no simulated board with device id {device_id}")

    async def kill(self, device_id: int) -> None:
        """Power-cut one board (SIGKILL to it and its children)."""
        board = self.by_id(device_id)
        if board.process is not None and board.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(board.process.pid, signal.SIGKILL)
            await board.process.wait()

    async def stop(self) -> None:
        """Terminate every board, wait for them, and close their ptys."""
        for board in self.devices:
            if board.process is not None and board.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(board.process.pid, signal.SIGTERM)
        for board in self.devices:
            if board.process is None:
                continue
            try:
                await asyncio.wait_for(board.process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(board.process.pid, signal.SIGKILL)
                await board.process.wait()


async def start_board(flash: Path, device_id: int, heap: str, ptys: bool) -> SimBoard:
    """Start one board process (through the pty bridge when ptys) in its flash dir."""
    log = open(flash / "console.log", "ab")  # noqa: SIM115 - handed to the child process
    try:
        if ptys:
            link = flash / "tty"
            cmd = [
                sys.executable,
                "-m",
                "hub.tools.firmware.ptybridge",
                "--flash",
                str(flash),
                "--link",
                str(link),
                "--heap",
                heap,
            ]
        else:
            link = None
            cmd = board_command(heap)
        process = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=str(flash),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    finally:
        log.close()
    return SimBoard(device_id, process.pid, str(link) if link else None, flash, process)


async def start_fleet(cfg: FleetConfig) -> Fleet:
    """Build the .mpy image if needed, provision every board, start them all."""
    image = await asyncio.to_thread(build, None, cfg.use_mpy)
    rng = random.Random(cfg.seed)
    devices: list[SimBoard] = []
    fleet = Fleet(devices)
    try:
        for index in range(cfg.count):
            device_id = cfg.first_device_id + index
            flash = await asyncio.to_thread(provision, cfg, device_id, rng, image)
            devices.append(await start_board(flash, device_id, cfg.heap, cfg.ptys))
        if cfg.ptys:
            await _wait_ptys(devices)
    except BaseException:
        await fleet.stop()
        raise
    return fleet


async def _wait_ptys(devices: list[SimBoard], timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    for board in devices:
        while board.pty and not os.path.exists(board.pty):
            if board.process is not None and board.process.returncode is not None:
                raise FleetError(f"board {board.device_id} exited: see {board.console_log}")
            if loop.time() > deadline:
                raise FleetError(f"board {board.device_id}: no pty after {timeout_s}s")
            await asyncio.sleep(0.02)
