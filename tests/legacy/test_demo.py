"""`etp demo --legacy-batteries K`: legacy doubles trade beside the firmware boards, and the
summary counts their trades apart from the rest."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hub.legacy import is_legacy_device
from hub.store import Store, database_url_for
from tests.brokers import free_port
from tests.conftest import micropython_available

pytestmark = [pytest.mark.slow, pytest.mark.micropython]

REPO = Path(__file__).resolve().parents[2]


async def _legacy_verified(data_dir: Path) -> int:
    async with Store(database_url_for(data_dir)) as store:
        trades = await store.list_trades("verified")
    return sum(1 for trade in trades if is_legacy_device(trade.device_id))


def test_demo_with_legacy_batteries_counts_their_trades(tmp_path: Path) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "demo",
            "--batteries",
            "2",
            "--legacy-batteries",
            "2",
            "--duration",
            "20",
            "--data-dir",
            str(tmp_path),
            "--http-port",
            str(free_port()),
            "--mqtt-port",
            str(free_port()),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    out = result.stdout
    assert "2 legacy batteries via the bridge" in out
    summary = next(line for line in out.splitlines() if line.startswith("summary:"))
    legacy_trades = int(re.search(r"legacy trades (\d+)", summary).group(1))  # type: ignore[union-attr]
    all_trades = int(re.search(r"\| trades (\d+)", summary).group(1))  # type: ignore[union-attr]
    assert 0 < legacy_trades < all_trades  # the boards traded too
    line = next(line for line in out.splitlines() if line.strip().startswith("legacy: 2 "))
    verified = int(re.search(r"(\d+) verified trades of", line).group(1))  # type: ignore[union-attr]
    confirmed = int(re.search(r"confirmed (\d+) sales", line).group(1))  # type: ignore[union-attr]
    # the hub's verified legacy trades are the sales the legacy batteries themselves made
    assert verified == confirmed == asyncio.run(_legacy_verified(tmp_path)) > 0
    for device in (60001, 60002):
        per_device = next(row for row in out.splitlines() if f"legacy {device}:" in row)
        assert int(re.search(r"(\d+) trades", per_device).group(1)) > 0  # type: ignore[union-attr]
        assert "garbled reads at the battery 0" in per_device
    # the competitive-pricing report counts them too
    report = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "report", "--data-dir", str(tmp_path),
         "--out", str(tmp_path / "report")],
        cwd=REPO, capture_output=True, text=True, timeout=150,
    )
    assert report.returncode == 0, report.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| 60001 (legacy) |" in text and "| 60002 (legacy) |" in text
    counted = re.search(r"Legacy batteries .*?: 2, (\d+) trades", text)
    assert counted is not None and int(counted.group(1)) == verified
