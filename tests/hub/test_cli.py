"""The commands users run: `etp demo --duration` and `etp bench hub --json`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import pytest

from hub.auth import ApiKeyAuthenticator
from hub.store import Store, database_url_for
from tests.brokers import free_port
from tests.conftest import micropython_available

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _etp(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub.cli.main", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.micropython
def test_demo_with_real_firmware_trades_and_exits_cleanly(tmp_path: Path) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed")
    http_port = free_port()
    result = _etp("demo", "--batteries", "3", "--duration", "10", "--data-dir", str(tmp_path),
                  "--http-port", str(http_port), "--mqtt-port", str(free_port()), timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Warning:" not in result.stderr, result.stderr
    out = result.stdout
    assert f"http://127.0.0.1:{http_port}" in out
    summary = next(line for line in out.splitlines() if line.startswith("summary:"))
    trades = int(re.search(r"trades (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert trades > 0
    assert "vs reserve" in summary and "deadline misses" in summary
    assert f"etp report --data-dir {tmp_path}" in out
    assert (tmp_path / "etp.db").exists()
    # the first start made an operator key, shown once, and the dashboard's address carries a
    # viewer key in its fragment; both work
    operator = re.findall(r"^API key \(operator, shown once\): (etp_\S+)$", out, re.M)
    viewer = re.findall(rf"^dashboard: http://127.0.0.1:{http_port}/#key=(etp_\S+) ", out, re.M)
    assert len(operator) == 1 and len(viewer) == 1, out
    assert asyncio.run(_roles(tmp_path, operator + viewer)) == ["operator", "viewer"]


async def _roles(data_dir: Path, keys: Iterable[str]) -> list[str]:
    """The role each key authenticates as against the demo's store (None: refused)."""
    async with Store(database_url_for(data_dir)) as store:
        auth = ApiKeyAuthenticator(store)
        principals = [await auth.authenticate(key) for key in keys]
        await auth.close()
    return [p.role.value if p else "refused" for p in principals]


def test_bench_hub_prints_measured_json(tmp_path: Path) -> None:
    result = _etp("bench", "hub", "--batteries", "30", "--aggregators", "3", "--duration", "3",
                  "--status-ms", "1000", "--json", timeout=120)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["batteries_online"] == 30
    assert data["authenticated_msg_per_s"] > 0 and data["trades_per_s"] > 0
    assert data["latency_ms"]["bid"]["p99_ms"] is not None
    assert data["lost_accepted_trades"] == 0 and data["mismatched_trades"] == 0
    assert data["hub_rss_mb"] > 0 and data["hub_cpu_cores"] > 0


def test_hub_logs_only_json_lines_with_json_format(tmp_path: Path) -> None:
    """ETP_LOG_FORMAT=json: every line on stderr is JSON, the web server's included (a bad
    HTTP request makes it log a warning)."""
    http_port = free_port()
    env = {**os.environ, "ETP_DATA_DIR": str(tmp_path), "ETP_LOG_FORMAT": "json",
           "ETP_HTTP_PORT": str(http_port), "ETP_MQTT_PORT": str(free_port())}
    hub = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "hub"], cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health/live",
                                            timeout=2) as response:
                    assert response.status == 200
                break
            except OSError:
                assert hub.poll() is None and time.monotonic() < deadline, "hub did not start"
                time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", http_port), timeout=5) as sock:
            sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            sock.recv(1024)
    finally:
        hub.send_signal(signal.SIGINT)
        _out, err = hub.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert any("Invalid HTTP request" in line for line in lines), err
    for line in lines:
        assert line.startswith("{"), line
        json.loads(line)
