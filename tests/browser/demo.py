"""`etp demo` as a child process for the browser tests: started on free loopback ports, its
output kept in a log file and parsed for the dashboard URL and the keys it prints, stopped
with Ctrl-C (SIGINT) like a user would, and killed with its whole process group if it hangs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.brokers import free_port
from tests.hub.helpers import get_json

REPO = Path(__file__).resolve().parents[2]

DEMO_START_TIMEOUT_S = 180.0  # four MicroPython boards on a busy 2-core machine
DEMO_STOP_TIMEOUT_S = 60.0

_DASHBOARD_LINE = re.compile(r"^dashboard: (?P<url>http://\S+)")
_OPERATOR_KEY_LINE = re.compile(r"^API key \(operator, shown once\): (?P<key>\S+)")
_VIEWER_KEY_LINE = re.compile(r"^API key \(viewer, shown once\): (?P<key>\S+)")

_T = TypeVar("_T")


class DemoError(AssertionError):
    """The demo did not start, print what it should, or stop in time (the log says why)."""


def wait_until(
    probe: Callable[[], _T | None], timeout_s: float, what: str, interval_s: float = 0.2
) -> _T:
    """Call `probe` until it returns something truthy and return it; fail after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def _demo_env() -> dict[str, str]:
    """This process' environment without ETP_ settings that would point the demo elsewhere
    (a database URL, a broker), but with the dashboard directory when one is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
    if "ETP_DASHBOARD_DIR" in os.environ:
        env["ETP_DASHBOARD_DIR"] = os.environ["ETP_DASHBOARD_DIR"]
    env["PYTHONUNBUFFERED"] = "1"
    return env


def create_api_key(data_dir: Path, name: str, role: str) -> str:
    """A key made with `etp apikey create --json` in the demo's data dir (before or while it
    runs), as a user would; returns the key."""
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "apikey", "create", "--data-dir", str(data_dir),
         "--name", name, "--role", role, "--json"],
        cwd=REPO, env=_demo_env(), capture_output=True, text=True, timeout=60, check=False,
    )
    if result.returncode != 0:
        raise DemoError(f"etp apikey create failed ({result.returncode}): {result.stderr}")
    return str(json.loads(result.stdout)["key"])


class Demo:
    """One `etp demo` (hub, embedded broker, SQLite, MicroPython batteries) in `data_dir`, on
    ports chosen once so a restart comes back on the same ones. Every life's output is
    appended to `log_path`."""

    def __init__(self, data_dir: Path, log_path: Path, batteries: int = 4) -> None:
        self.data_dir = data_dir
        self.log_path = log_path
        self.batteries = batteries
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.proc: subprocess.Popen[str] | None = None
        self.dashboard_url: str | None = None  # with #key=<this life's viewer key>
        self.viewer_key: str | None = None
        self.operator_key: str | None = None  # printed on the first start only
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout_s: float = DEMO_START_TIMEOUT_S) -> None:
        """Start the demo and wait for its dashboard line (printed once the hub serves and the
        batteries run), then for the hub to say it is ready."""
        self.dashboard_url = self.viewer_key = None
        self._lines = []
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"--- etp demo start at {time.strftime('%H:%M:%S')} ---\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hub.cli.main", "demo", "--data-dir", str(self.data_dir),
             "--http-port", str(self.http_port), "--mqtt-port", str(self.mqtt_port),
             "--batteries", str(self.batteries)],
            cwd=REPO, env=_demo_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,  # its own process group: the boards die with it if killed
        )
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,), daemon=True)
        self._reader.start()
        wait_until(self._parsed_dashboard_line, timeout_s, "the demo's `dashboard:` line")
        wait_until(self._ready, timeout_s, "the hub's /health/ready")

    def _read_output(self, proc: subprocess.Popen[str]) -> None:
        """Drain the demo's output (a full pipe would block it) into the log and the lines."""
        assert proc.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                self._lines.append(line.rstrip("\n"))

    def _check_running(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise DemoError(f"etp demo exited ({code}); log {self.log_path}:\n{self.log_tail()}")

    def _parsed_dashboard_line(self) -> bool:
        self._check_running()
        url = None
        for line in list(self._lines):
            if match := _OPERATOR_KEY_LINE.match(line):
                self.operator_key = match["key"]
            elif match := _VIEWER_KEY_LINE.match(line):
                self.viewer_key = self.viewer_key or match["key"]
            elif match := _DASHBOARD_LINE.match(line):
                url = match["url"]
        if url is None:
            return False
        fragment = urllib.parse.urlsplit(url).fragment
        key = urllib.parse.parse_qs(fragment).get("key")
        if key:
            self.viewer_key = key[0]
            self.dashboard_url = url
            return True
        # A demo older than the dashboard prints the status URL and, on a first start only,
        # the viewer key on a line of its own (after the dashboard line); on later starts a
        # line saying keys were made before.
        if self.viewer_key is not None:
            self.dashboard_url = f"{self.base_url}/#key={self.viewer_key}"
            return True
        return any(line.startswith("API keys:") for line in self._lines)

    def _ready(self) -> bool:
        self._check_running()
        status, _ = self.get("/health/ready")
        return status == 200

    def get(self, path: str, key: str | None = None) -> tuple[int, Any]:
        """(status, JSON) of GET path on the hub; (0, None) while it does not answer."""
        try:
            return get_json(self.base_url + path, key, timeout=10.0)
        except (OSError, ValueError):
            return 0, None

    def api(self, path: str, key: str) -> Any:
        """The JSON of GET path with `key`; fails unless the hub answers 200."""
        status, body = self.get(path, key)
        if status != 200:
            raise AssertionError(f"GET {path} answered {status}: {body}")
        return body

    def events(self, after_seq: int, up_to_seq: int, key: str) -> list[dict[str, Any]]:
        """The hub's event log with after_seq < seq <= up_to_seq, oldest first."""
        events: list[dict[str, Any]] = []
        cursor = after_seq
        while cursor < up_to_seq:
            page = self.api(f"/api/v1/events?after_seq={cursor}&limit=1000", key)
            if not page:
                break
            events.extend(event for event in page if event["seq"] <= up_to_seq)
            cursor = page[-1]["seq"]
        return events

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the demo's log (for failure messages)."""
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = DEMO_STOP_TIMEOUT_S) -> int | None:
        """Ctrl-C the demo and wait for it; kill its process group if it does not stop in
        time. Returns its exit code (None if it was not running)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
        self._kill_group(proc)  # boards left behind by a demo that died
        if self._reader is not None:
            self._reader.join(10)
        return proc.returncode

    @staticmethod
    def _kill_group(proc: subprocess.Popen[str]) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
