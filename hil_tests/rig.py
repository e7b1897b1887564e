"""The HIL rig's parts: the board under test (a real one on a serial port, or a simulated one
on a pty), its console, the hub it trades with (a real HubRuntime with its embedded broker),
and the results table.

The board is driven only as a person would drive it: `etp firmware flash` / `etp firmware
audit` / `mpremote` on its port, Ctrl-C and Ctrl-D typed on its console, its power cut by a
hook (a relay or a switchable USB hub port), and MQTT to trade with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import serial  # pyserial (mpremote's own dependency)

from hub.events import EventKind
from hub.runtime import HubRuntime
from hub.settings import Settings, load_master_secret
from hub.tools.firmware.binaries import venv_tool
from hub.tools.firmware.build import build, install_image
from hub.tools.firmware.fleet import start_board
from shared_etp.frame import derive_key

ETP = [sys.executable, "-m", "hub.cli.main"]
CTRL_C, CTRL_D = b"\x03", b"\x04"

# Removes every file on the board's flash but boot.py (a real board's boot.py brings its
# network up; a simulated board keeps its pty link `tty` and `console.log` in its flash dir):
# a clean filesystem for `etp firmware flash`. Prints what is left.
WIPE_SCRIPT = """
import os
KEEP = ('boot.py', 'tty', 'console.log')
def _wipe(d):
    for e in os.ilistdir(d or '.'):
        p = d + '/' + e[0] if d else e[0]
        if e[1] == 0x4000:
            _wipe(p)
            os.rmdir(p)
        elif p not in KEEP:
            os.remove(p)
_wipe('')
print(sorted(os.listdir()))
"""
KEPT_BY_WIPE = {"boot.py", "tty", "console.log"}


class RigError(RuntimeError):
    """The rig could not do what a case needs (a command failed, the board is gone)."""


@dataclass
class RigOptions:
    """The command-line options of `pytest hil_tests` (see conftest.py)."""

    board: str = "sim"
    power_cmd: str | None = None
    fault_cmd: str | None = None
    report: Path | None = None
    long: bool = False
    hub_address: str = "127.0.0.1"
    mqtt_port: int = 0
    heap: str = "64K"
    heap_limit_bytes: int = 60 * 1024
    flash_set: list[str] = field(default_factory=list)
    device_id: int = 7

    @property
    def simulated(self) -> bool:
        """True for the pty-bridged simulated board."""
        return self.board == "sim"

    @property
    def auctions(self) -> int:
        """How many auctions the trading case runs."""
        return 1000 if self.long else 150


def run_hook(command: str, state: str, timeout_s: float = 30.0) -> None:
    """Run a power/fault hook: `{state}` in the command is replaced by on/off, else the state is
    appended as the last argument."""
    if "{state}" in command:
        argv = shlex.split(command.replace("{state}", state))
    else:
        argv = [*shlex.split(command), state]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RigError(f"hook {argv!r} failed ({result.returncode}): {result.stderr.strip()}")


def etp(*args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the etp command line, as a person would."""
    return subprocess.run([*ETP, *args], capture_output=True, text=True, timeout=timeout_s)


class Console:
    """The board's serial console, read in a thread: the node's JSON lines (`ev` = boot,
    connected, stats, ...) and whatever else it prints. Closed while mpremote has the port."""

    def __init__(self, port: str, events: list[dict[str, Any]]) -> None:
        self.port = port
        self.events = events  # kept across power cuts and mpremote sessions
        self.raw = bytearray()
        self._serial: serial.Serial | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def open(self, timeout_s: float = 15.0) -> None:
        """Open the port (waiting for it to appear: a board coming back from a power cut)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._serial = serial.Serial(self.port, 115200, timeout=0.05)
                break
            except (serial.SerialException, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RigError(f"cannot open {self.port}: {exc}") from exc
                time.sleep(0.05)
        self._stop.clear()
        self._thread = threading.Thread(target=self._read, name="board-console", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop reading and release the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None

    def _read(self) -> None:
        pending = b""
        while not self._stop.is_set():
            link = self._serial
            if link is None:
                return
            try:
                data = link.read(4096)
            except (serial.SerialException, OSError, TypeError):
                # the port went away (a real board resetting re-enumerates): open it again
                with contextlib.suppress(Exception):
                    link.close()
                time.sleep(0.1)
                with contextlib.suppress(serial.SerialException, OSError):
                    self._serial = serial.Serial(self.port, 115200, timeout=0.05)
                continue
            if not data:
                continue
            with self._lock:
                self.raw += data
                del self.raw[:-65536]
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                text = line.strip().decode(errors="replace")
                if text.startswith("{") and text.endswith("}"):
                    with contextlib.suppress(ValueError):
                        event = json.loads(text)
                        if isinstance(event, dict):
                            event["_host_ms"] = time.time() * 1000
                            with self._lock:
                                self.events.append(event)

    def write(self, data: bytes) -> None:
        """Type on the console."""
        if self._serial is None:
            raise RigError("the console is closed")
        self._serial.write(data)
        self._serial.flush()

    def seen(self, needle: bytes) -> bool:
        """True if the console's recent output holds `needle`."""
        with self._lock:
            return needle in self.raw

    def clear_raw(self) -> None:
        """Forget the recent output (before waiting for a prompt)."""
        with self._lock:
            self.raw.clear()

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The node's console events of one kind (`ev`), oldest first."""
        with self._lock:
            return [e for e in self.events if e.get("ev") == kind]


@dataclass
class BoardUnderTest:
    """The board the rig tests: its port, flash image config, power and console."""

    options: RigOptions
    work_dir: Path
    port: str = ""
    flash_dir: Path | None = None  # the simulated board's flash (None for a real board)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)
    console: Console | None = None
    events: list[dict[str, Any]] = field(default_factory=list)  # the console's, all along

    async def power_on(self) -> None:
        """Power the board (sim: start its process behind a pty; real: the power hook)."""
        if self.options.simulated:
            assert self.flash_dir is not None
            board = await start_board(
                self.flash_dir, self.options.device_id, self.options.heap, ptys=True
            )
            self.process = board.process
            assert board.pty is not None
            self.port = board.pty
            deadline = time.monotonic() + 10
            while not os.path.exists(self.port):
                if time.monotonic() > deadline:
                    raise RigError(f"the simulated board made no pty; see {board.console_log}")
                await asyncio.sleep(0.02)
        elif self.options.power_cmd:
            await asyncio.to_thread(run_hook, self.options.power_cmd, "on")
        await asyncio.to_thread(self._open_console)

    def _open_console(self) -> None:
        self.console = Console(self.port, self.events)
        self.console.open()

    async def power_off(self) -> None:
        """Cut the board's power (sim: SIGKILL its process group; real: the power hook)."""
        if self.console is not None:
            self.console.close()
        if self.options.simulated:
            process = self.process
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        elif self.options.power_cmd:
            await asyncio.to_thread(run_hook, self.options.power_cmd, "off")
        else:
            raise RigError("a power cut on a real board needs --power-cmd")

    async def start(self) -> None:
        """Bring the rig's board up. A simulated board starts as a used one: an earlier
        firmware image on its flash with another device's config, running and retrying a
        broker that is not there, and an old audit trail (the flash case must wipe them)."""
        if self.options.simulated:
            self.flash_dir = self.work_dir / "flash"
            await asyncio.to_thread(_used_board_flash, self.flash_dir)
            await self.power_on()
        else:
            self.port = self.options.board
            await asyncio.to_thread(self._open_console)

    async def stop(self) -> None:
        """Close the console; a simulated board is switched off."""
        if self.console is not None:
            self.console.close()
        process = self.process
        if self.options.simulated and process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()

    @contextlib.contextmanager
    def port_released(self) -> Iterator[None]:
        """Hand the port to mpremote/etp for a while (the console stops reading)."""
        if self.console is not None:
            self.console.close()
        try:
            yield
        finally:
            self._open_console()

    async def mpremote(self, *args: str, timeout_s: float = 120) -> str:
        """Run `mpremote connect <port> ...`; returns its output, raises on failure."""
        tool = venv_tool("mpremote")

        def run() -> subprocess.CompletedProcess[str]:
            with self.port_released():
                return subprocess.run(
                    [tool, "connect", self.port, *args],
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                )

        result = await asyncio.to_thread(run)
        if result.returncode != 0:
            raise RigError(
                f"mpremote {' '.join(args[:2])} failed: "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )
        return result.stdout

    async def etp(self, *args: str, timeout_s: float = 300) -> str:
        """Run `etp firmware ... --port <port>` with the port released; raises on failure."""

        def run() -> subprocess.CompletedProcess[str]:
            with self.port_released():
                return etp(*args, "--port", self.port, timeout_s=timeout_s)

        result = await asyncio.to_thread(run)
        if result.returncode != 0:
            raise RigError(
                f"etp {' '.join(args[:2])} failed: "
                f"{(result.stderr or result.stdout).strip()[-600:]}"
            )
        return result.stdout

    async def audit(self) -> dict[str, Any]:
        """The board's audit trail read back by `etp firmware audit --json`. The node stops
        for it (mpremote interrupts main.py): `reset()` starts it again."""
        out = await self.etp("firmware", "audit", "--json", "--limit", "1000000")
        report: dict[str, Any] = json.loads(out)
        return report

    async def reset(self) -> None:
        """Hard reset (`mpremote reset`): the node boots from main.py."""
        await self.mpremote("reset")

    async def type_keys(self, data: bytes, expect: bytes | None, timeout_s: float = 5) -> None:
        """Type on the console and wait for `expect` in its output."""
        assert self.console is not None
        self.console.clear_raw()
        self.console.write(data)
        if expect is None:
            return
        deadline = time.monotonic() + timeout_s
        while not self.console.seen(expect):
            if time.monotonic() > deadline:
                raise RigError(f"no {expect!r} on the console after typing {data!r}")
            await asyncio.sleep(0.01)

    def inject_fault(self, fault: str) -> None:
        """Make the battery fault (sim: the fault file on flash; real: --fault-cmd on/off)."""
        if self.options.simulated:
            assert self.flash_dir is not None
            tmp = self.flash_dir / "etp_fault.tmp"
            tmp.write_text(fault)
            tmp.replace(self.flash_dir / "etp_fault")
        elif self.options.fault_cmd:
            run_hook(self.options.fault_cmd, "off" if fault == "clear" else "on")
        else:
            raise RigError("fault injection on a real board needs --fault-cmd")


USED_BOARD_DEVICE_ID = 99


def _used_board_flash(flash: Path) -> None:
    """A simulated board's flash as a used board's: image, another config, an old trail."""
    flash.mkdir(parents=True, exist_ok=True)
    install_image(build(), flash)
    stale = {
        "device_id": USED_BOARD_DEVICE_ID,
        "site": "elsewhere",
        "key": "00" * 32,
        "mqtt_url": "mqtt://127.0.0.1:9",
    }
    (flash / "etp_config.json").write_text(json.dumps(stale))
    (flash / "audit").mkdir(exist_ok=True)
    (flash / "audit" / "audit.3").write_text('00000000 {"k": "boot", "n": 0}\n')


def hub_settings(options: RigOptions, data_dir: Path, http_port: int) -> Settings:
    """The rig hub's settings: embedded broker where the board can reach it, one auction at a
    time per board and short rounds (a bid is held ~100 ms: the soft-reset case's window),
    aggregators that want more than the board sells (no pacing pauses)."""
    local = options.hub_address in ("127.0.0.1", "localhost")
    return Settings(
        data_dir=data_dir,
        mqtt_host=options.hub_address,
        mqtt_port=options.mqtt_port,
        allow_plaintext=not local,  # a bench LAN: the board speaks plain MQTT to the rig
        http_port=http_port,
        auction_interval_ms=50,
        round_ms=60,
        lot_wh=100,
        min_lot_wh=10,
        notice_interval_ms=1000,
        aggregator_demand_scale=20,
        log_level="warning",
        settlement_network="off",  # trading only: the rig checks trades, not their settlement
    )


class HubRig:
    """A real hub (HubRuntime: embedded amqtt broker, store, auctions) the board trades with."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = HubRuntime(settings)

    @property
    def board_url(self) -> str:
        """The broker URL the board is flashed with."""
        return f"mqtt://{self.settings.mqtt_host}:{self.settings.mqtt_port}"

    async def start(self) -> None:
        """Start the hub (and its broker)."""
        await self.runtime.start()

    async def stop(self) -> None:
        """Stop the hub."""
        await self.runtime.stop()

    def keys(self, device_id: int) -> tuple[str, str]:
        """(device key, notice key) as hex for `etp firmware flash`."""
        master = load_master_secret(self.settings.master_secret_path())
        return derive_key(master, device_id).hex(), derive_key(master, 0).hex()

    def online(self, device_id: int) -> bool:
        """The hub holds the board online (registered, not failed)."""
        registry = self.runtime.registry
        device = registry.devices.get(device_id) if registry is not None else None
        return bool(device is not None and device.online)

    def totals(self) -> dict[str, Any]:
        """The market's counts (auctions, trades, unverified)."""
        assert self.runtime.auctions is not None
        return self.runtime.auctions.summary()

    def latency_marks(self) -> dict[str, int]:
        """How many latency samples each request type has so far (a case's start)."""
        return {name: hist.count for name, hist in self.runtime.metrics.latency.items()}

    def latency_since(self, marks: dict[str, int]) -> dict[str, list[float]]:
        """Request -> response latencies (ms) per request type measured since `marks`."""
        out: dict[str, list[float]] = {}
        for name, hist in self.runtime.metrics.latency.items():
            new = hist.count - marks.get(name, 0)
            if new > 0:
                out[name] = list(hist.samples)[-min(new, len(hist.samples)) :]
        return out

    async def broker_down(self) -> None:
        """Stop the embedded broker (every client loses its link)."""
        assert self.runtime.broker is not None
        await self.runtime.broker.stop()

    async def broker_up(self) -> None:
        """Start the embedded broker again on the same port."""
        assert self.runtime.broker is not None
        await self.runtime.broker.start()

    @contextlib.asynccontextmanager
    async def trading_paused(self, timeout_s: float = 60) -> AsyncIterator[None]:
        """No new auctions while inside (the operator's pause): entered once the open ones
        have closed and every trade is decided (verified or void), none awaiting its battery."""
        auctions = self.runtime.auctions
        store = self.runtime.store
        assert auctions is not None and store is not None
        by = {"name": "hil rig"}
        auctions.operator.pause_trading(by, int(time.time() * 1000))
        try:
            await wait_for(
                lambda: self.totals()["auctions_open"] == 0,
                timeout_s,
                "the open auctions to close",
                0.05,
            )
            began = time.monotonic()
            while True:
                undecided = [
                    t for t in await store.list_trades() if t.status in ("recorded", "unverified")
                ]
                if not undecided and self.totals()["trades_unverified"] == 0:
                    break
                if time.monotonic() - began > timeout_s:
                    raise AssertionError(f"trades still undecided after {timeout_s} s: {undecided}")
                await asyncio.sleep(0.2)
            yield
        finally:
            auctions.operator.resume_trading(by)

    def expect(
        self, kinds: set[EventKind], match: Callable[[Any], bool], timeout_s: float, what: str
    ) -> asyncio.Task[Any]:
        """A task that ends with the first event of `kinds` that `match`es, counted from this
        call on (subscribed before returning: start it before causing the event)."""
        assert self.runtime.events is not None
        subscription = self.runtime.events.subscribe(kinds)

        async def wait() -> Any:
            with subscription:
                try:
                    async with asyncio.timeout(timeout_s):
                        while True:
                            event = await subscription.get()
                            if match(event):
                                return event
                except TimeoutError:
                    raise AssertionError(f"no {what} within {timeout_s} s") from None

        return asyncio.create_task(wait())

    def expect_online(self, device_id: int, timeout_s: float = 30) -> asyncio.Task[Any]:
        """A task that ends when the board registers again (a fresh birth at the hub)."""
        return self.expect(
            {EventKind.DEVICE_ONLINE},
            lambda e: e.device_id == device_id,
            timeout_s,
            f"registration of board {device_id}",
        )


async def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.01
) -> float:
    """Poll until true; returns the seconds it took; fails with `what` after timeout_s."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(poll_s)
    return time.monotonic() - began


__all__ = [
    "BoardUnderTest",
    "Console",
    "HubRig",
    "RigError",
    "RigOptions",
    "hub_settings",
    "run_hook",
    "wait_for",
]
