"""Fixtures of the browser tests: a real Chromium (Debian's, driven by pip playwright) with a
fresh profile per test, a real `etp demo` per test, and a directory the run keeps for
screenshots and the demos' logs (`$ETP_ARTIFACTS`, else tests/browser/artifacts/)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.demo import Demo

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Page, Playwright

CHROMIUM = os.environ.get("ETP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm: Chromium's tabs crash
]
# Waits for the page (milliseconds, playwright's unit): generous, a busy 2-core machine runs
# four MicroPython boards, the hub and Chromium at once.
PAGE_TIMEOUT_MS = 30_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test item, so fixtures can tell that a test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where screenshots and demo logs go; kept after the run (git-ignored by default)."""
    path = Path(os.environ.get("ETP_ARTIFACTS") or Path(__file__).parent / "artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _file_name(request: pytest.FixtureRequest) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    """The playwright driver, with Debian's Chromium (not playwright's own download)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: run `bash scripts/browser-deps.sh` as root "
                    "(installs Debian's chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="pip playwright is missing: pip install -e '.[dev]'"
    )
    with sync_api.sync_playwright() as driver:
        yield driver


@dataclass
class BrowserErrors:
    """Console errors and uncaught exceptions of every page of a context."""

    messages: list[str] = field(default_factory=list)

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(f"console: {message.text} ({message.location.get('url')})")

    def uncaught(self, error: Error) -> None:
        self.messages.append(f"uncaught: {error}")


@dataclass
class Browser:
    """A Chromium context with a fresh profile, and the errors its pages logged."""

    context: BrowserContext
    errors: BrowserErrors

    def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab `width` CSS pixels wide."""
        page = self.context.new_page()
        page.set_viewport_size({"width": width, "height": height})
        page.on("console", self.errors.console)
        page.on("pageerror", self.errors.uncaught)
        return page


@pytest.fixture
def browser(
    playwright: Playwright, tmp_path: Path, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Browser]:
    """Chromium with a fresh user-data-dir; on failure each open page is screenshotted."""
    for stale in artifacts.glob(f"{_file_name(request)}-failed-*.png"):
        stale.unlink()  # from an earlier run of this test
    profile = tmp_path / "chromium-profile"
    context = playwright.chromium.launch_persistent_context(
        str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    for blank in context.pages:  # the tab a persistent context opens with
        blank.close()
    opened = Browser(context, BrowserErrors())
    try:
        yield opened
    finally:
        if _failed(request):
            for number, page in enumerate(context.pages):
                try:
                    page.screenshot(
                        path=str(artifacts / f"{_file_name(request)}-failed-{number}.png"),
                        full_page=True,
                    )
                except Exception:  # the page may be gone; the failure itself is reported
                    pass
        context.close()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def make_demo(
    tmp_path: Path, artifacts: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[], Demo]]:
    """Makes a Demo (not started) in a fresh data dir; every one made is stopped at the end,
    whatever the test did. Its output goes to <artifacts>/<test>-demo.log."""
    made: list[Demo] = []

    def make() -> Demo:
        data_dir = tmp_path / f"demo-{len(made)}"
        log = artifacts / f"{_file_name(request)}-demo{len(made) or ''}.log"
        log.unlink(missing_ok=True)
        demo = Demo(data_dir, log)
        made.append(demo)
        return demo

    try:
        yield make
    finally:
        for demo in made:
            demo.stop()


@pytest.fixture
def demo(make_demo: Callable[[], Demo]) -> Demo:
    """A running `etp demo` with 4 batteries in a fresh data dir (its first start: it printed
    an operator key and a viewer key)."""
    started = make_demo()
    started.start()
    return started
