"""`etp bench gateway --json`, run small (a few clients, a few seconds): its figures are there
and hold together, every client got every event, and it leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from hub.tools.bench.gateway import format_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _processes_with_tmpdir(tmpdir: Path) -> list[str]:
    """Command lines of processes started under the given TMPDIR (the bench's hub, its
    broker, its client processes all inherit it)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if process.environ().get("TMPDIR") == str(tmpdir):
                found.append(" ".join(process.info["cmdline"] or []))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def test_bench_gateway_reports_fan_out_cpu_and_query_latency(tmp_path: Path) -> None:
    clients, rounds = 6, 4
    result = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "bench", "gateway", "--clients", str(clients),
         "--processes", "2", "--duration", "3", "--trades", "3000", "--query-rounds",
         str(rounds), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(result.stdout)

    assert data["clients"] == clients and data["client_processes"] == 2
    assert data["clients_failed"] == []
    # the simulated batteries trade, so events flow; every client got each one exactly once
    assert data["events"] > 10 and data["events_per_s"] > 3 and data["seqs_gapless"]
    assert data["clients_with_every_event"] == clients
    assert data["deliveries"] == data["events"] * clients
    assert data["resyncs"] == 0 and data["hub_resyncs_slow"] == 0
    fan_out = data["fan_out_ms"]
    assert 0 < fan_out["p50"] <= fan_out["p99"] <= fan_out["max"] + 0.1 < 10_000
    assert data["hub_cpu_s"] > 0 and 0 < data["hub_cpu_percent"] < 100 * data["machine_cores"]
    assert data["clients_cpu_percent"] > 0

    queries = data["dashboard_queries"]
    assert set(queries["queries"]) == {
        "status", "batteries", "trades", "trades_filtered", "auctions", "aggregators", "events",
        "history_24h", "competition",
    }
    for name, figures in queries["queries"].items():
        assert figures["count"] == rounds, name
        assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"] < 10_000, name
    assert queries["all"]["count"] == rounds * len(queries["queries"])

    # the default output, a table, shows the same figures
    table = format_table(data)
    assert f"{fan_out['p50']} / {fan_out['p99']} / {fan_out['max']}" in table
    assert f"{clients} of {clients} ({data['events']} events)" in table
    assert "trades_filtered" in table and "3,000 trades stored" in table

    assert _processes_with_tmpdir(tmp_path) == []
