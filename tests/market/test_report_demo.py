"""End to end: `etp demo` (hub + real firmware boards) trades, then `etp report` reads the store."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub.tools.ports import free_port
from tests.conftest import micropython_available

ETP = Path(sys.executable).with_name("etp")


def run_in_own_group(args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """Run a command in its own process group; on timeout kill the whole group (the demo's
    board processes included) so nothing outlives the test."""
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"{args[1]} did not finish in {timeout_s} s: {err[-2000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.micropython
def test_three_aggregators_on_the_real_system_beat_the_single_buyer(tmp_path: Path) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed (run scripts/setup.sh)")
    demo = run_in_own_group(
        [
            str(ETP),
            "demo",
            "--batteries",
            "4",
            "--aggregators",
            "3",
            "--duration",
            "12",
            "--data-dir",
            str(tmp_path),
            "--mqtt-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
        ],
        timeout_s=180,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    report = subprocess.run(
        [str(ETP), "report", "--data-dir", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-2000:]
    data = json.loads(report.stdout)
    assert data["source"] == "store" and data["cleared"] > 0
    assert data["premium_mean_pct"] > 0  # competition clears above reserve
    assert data["improvement"]["recorded_vs_single_price_per_kwh_pct"] > 0
    assert len(data["aggregators"]) == 3
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"{data['premium_mean_pct']:.1f} %" in md
    assert (tmp_path / "report" / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
