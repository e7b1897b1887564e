"""The commands users run: `etp demo --duration` and `etp bench hub --json`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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
    out = result.stdout
    assert f"http://127.0.0.1:{http_port}" in out
    summary = next(line for line in out.splitlines() if line.startswith("summary:"))
    trades = int(re.search(r"trades (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert trades > 0
    assert "vs reserve" in summary and "deadline misses" in summary
    assert f"etp report --data-dir {tmp_path}" in out
    assert (tmp_path / "etp.db").exists()


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
