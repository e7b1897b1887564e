"""Options and fixtures of the HIL rig: the board (--board PORT|sim), the hub it trades with,
and the results table (--report out.md). See hil_tests/README.md."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from hil_tests.rig import BoardUnderTest, HubRig, RigOptions, hub_settings
from hub.tools.firmware.binaries import ToolNotFoundError, micropython_binary
from tests.brokers import free_port


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hil", "HIL rig (hil_tests/): the board under test")
    group.addoption(
        "--board",
        default="sim",
        help="serial port of a MicroPython board (e.g. /dev/ttyACM0), or 'sim' "
        "(default): a simulated board on a pty (the real firmware on the unix port)",
    )
    group.addoption(
        "--power-cmd",
        default=None,
        help="command that switches the board's power: run with 'off' then 'on' "
        "appended (or with {state} replaced), e.g. 'uhubctl -l 1-1 -p 2 -a'; "
        "without it a real board skips the power-cut case",
    )
    group.addoption(
        "--fault-cmd",
        default=None,
        help="command that makes a real board's battery fault: run with 'on' then "
        "'off' (or {state}), e.g. a relay pulling the volt ADC pin to ground",
    )
    group.addoption(
        "--report",
        default=None,
        type=Path,
        help="write the results table (case, result, figures) to this Markdown file",
    )
    group.addoption(
        "--long",
        action="store_true",
        default=False,
        help="the long run: 1,000 auctions (default 150)",
    )
    group.addoption(
        "--hub-address",
        default="127.0.0.1",
        help="address of this machine the board reaches; the rig's broker listens "
        "there (a real board on Wi-Fi: the rig's LAN address)",
    )
    group.addoption(
        "--mqtt-port", default=0, type=int, help="the rig broker's port (default: a free one)"
    )
    group.addoption("--sim-heap", default="64K", help="the simulated board's MicroPython heap")
    group.addoption(
        "--heap-limit",
        default="60K",
        help="the node's live heap (its stats line, after a collection) must stay "
        "under this while trading",
    )
    group.addoption(
        "--flash-set",
        action="append",
        default=[],
        help="extra board config for `etp firmware flash --set`, e.g. "
        "adc_pins='{\"volt\": 26}' (repeatable)",
    )


@dataclass
class CaseResult:
    """One row of the results table."""

    case: str
    result: str = "not run"
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


class Results:
    """The rows, in the order the cases ran; written as Markdown at the session's end."""

    def __init__(self, options: RigOptions) -> None:
        self.options = options
        self.rows: dict[str, CaseResult] = {}
        self.began = time.monotonic()

    def row(self, nodeid: str, case: str) -> CaseResult:
        return self.rows.setdefault(nodeid, CaseResult(case))

    def markdown(self) -> str:
        board = "simulated board (pty, unix port)" if self.options.simulated else self.options.board
        lines = [
            f"Board: {board}; auctions in the trading case: {self.options.auctions}; "
            f"total {time.monotonic() - self.began:.1f} s",
            "",
            "| case | result | figures |",
            "|---|---|---|",
        ]
        for row in self.rows.values():
            figures = ", ".join(f"{k} {v}" for k, v in row.figures.items()) or "-"
            lines.append(f"| {row.case} | {row.result} ({row.seconds:.1f} s) | {figures} |")
        return "\n".join(lines) + "\n"


_RESULTS_KEY = pytest.StashKey[Results]()


def _options(config: pytest.Config) -> RigOptions:
    return RigOptions(
        board=config.getoption("--board"),
        power_cmd=config.getoption("--power-cmd"),
        fault_cmd=config.getoption("--fault-cmd"),
        report=config.getoption("--report"),
        long=config.getoption("--long"),
        hub_address=config.getoption("--hub-address"),
        mqtt_port=config.getoption("--mqtt-port"),
        heap=config.getoption("--sim-heap"),
        heap_limit_bytes=_bytes(config.getoption("--heap-limit")),
        flash_set=list(config.getoption("--flash-set")),
    )


def _bytes(size: str) -> int:
    """60K / 61440 -> bytes."""
    text = size.strip().upper()
    if text.endswith("K"):
        return int(float(text[:-1]) * 1024)
    return int(text)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """--long: 1,000 auctions on a real board take minutes (the suite's 300 s limit is for CI)."""
    if config.getoption("--long"):
        for item in items:
            if item.get_closest_marker("case") is not None:
                item.add_marker(pytest.mark.timeout(3600))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "case(name): a HIL rig case, a row of the results table")
    options = _options(config)
    if not options.simulated:
        if not Path(options.board).exists():
            raise pytest.UsageError(
                f"--board {options.board}: no such serial port (is the board plugged in? "
                "`mpremote connect list` shows the ports; --board sim runs a simulated board)"
            )
        if options.hub_address in ("127.0.0.1", "localhost"):
            raise pytest.UsageError(
                "a real board cannot reach the rig's broker on 127.0.0.1: give --hub-address "
                "with this machine's address on the board's network (e.g. 192.168.1.10)"
            )
    config.stash[_RESULTS_KEY] = Results(_options(config))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    results = item.config.stash.get(_RESULTS_KEY, None)
    marker = item.get_closest_marker("case")
    if results is None or marker is None:
        return report
    row = results.row(item.nodeid, marker.args[0])
    if report.when in ("setup", "call"):
        row.seconds += report.duration  # setup: the trading run's fixture, for the first user
    if report.when == "call" or (report.when == "setup" and not report.passed):
        row.result = "skipped" if report.skipped else ("pass" if report.passed else "FAIL")
        if report.skipped and isinstance(report.longrepr, tuple):
            row.figures.setdefault("reason", report.longrepr[2].removeprefix("Skipped: "))
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    results = session.config.stash.get(_RESULTS_KEY, None)
    if results is None or not results.rows:
        return
    if results.options.report is not None:
        results.options.report.write_text(results.markdown())
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("\nHIL rig results\n" + results.markdown())


@pytest.fixture(scope="session")
def rig_options(pytestconfig: pytest.Config) -> RigOptions:
    """The rig's options (--board, --power-cmd, ...)."""
    options = _options(pytestconfig)
    if options.simulated:
        try:
            micropython_binary()
        except ToolNotFoundError as exc:
            pytest.skip(f"simulated board: {exc}")
    if not options.mqtt_port:
        options.mqtt_port = free_port()
    return options


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The case's figures for the results table (filled by the test)."""
    results = request.config.stash[_RESULTS_KEY]
    marker = request.node.get_closest_marker("case")
    row = results.row(request.node.nodeid, marker.args[0] if marker else request.node.name)
    yield row.figures


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def hub(
    rig_options: RigOptions, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[HubRig]:
    """The hub the board trades with, up for the whole run (the board is flashed with its
    broker's address once)."""
    data_dir = tmp_path_factory.mktemp("hil-hub")
    rig = HubRig(hub_settings(rig_options, data_dir, free_port()))
    await rig.start()
    try:
        yield rig
    finally:
        await rig.stop()


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def board(
    rig_options: RigOptions, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[BoardUnderTest]:
    """The board under test; a simulated one starts with an empty flash."""
    work = tmp_path_factory.mktemp("hil-board")
    under_test = BoardUnderTest(rig_options, work)
    await under_test.start()
    try:
        yield under_test
    finally:
        await under_test.stop()
