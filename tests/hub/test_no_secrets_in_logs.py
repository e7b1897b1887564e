"""No secret ever appears in a log line: a whole `etp demo` at debug level with JSON logs
(hub, gateway, settlement, boards' supervisor) while API keys are used and refused over HTTP.
Checked against the secrets it holds: the site master secret, the settler's and the market
authority's keypairs, and every API key (the demo prints keys once on purpose, on stdout,
outside the log)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.brokers import free_port
from tests.conftest import micropython_available

REPO = Path(__file__).resolve().parents[2]


def _get(url: str, key: str) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.micropython
def test_a_debug_demo_logs_no_secret(tmp_path: Path) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed")
    http_port = free_port()
    env = {**os.environ, "ETP_LOG_LEVEL": "debug", "ETP_LOG_FORMAT": "json"}
    demo = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "demo", "--batteries", "3", "--duration", "12",
         "--data-dir", str(tmp_path), "--http-port", str(http_port),
         "--mqtt-port", str(free_port()), "--log-level", "debug"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # the keys appear on stdout once the hub is up; use them (and a wrong one) meanwhile
    stdout_lines: list[str] = []
    assert demo.stdout is not None
    deadline = time.monotonic() + 60
    keys: list[str] = []
    while time.monotonic() < deadline and len(keys) < 2:
        line = demo.stdout.readline()
        if not line:
            break
        stdout_lines.append(line)
        keys += re.findall(r"(etp_\d+_[A-Za-z0-9_-]{20,})", line)
    assert len(keys) == 2, stdout_lines
    base = f"http://127.0.0.1:{http_port}"
    assert _get(f"{base}/api/v1/whoami", keys[0]) == 200
    assert _get(f"{base}/api/v1/whoami", keys[0][:-4] + "AAAA") == 401  # a wrong secret
    rest_out, err = demo.communicate(timeout=120)
    assert demo.returncode == 0, err[-2000:]
    stdout = "".join(stdout_lines) + rest_out
    log_lines = [line for line in (stdout + err).splitlines() if line.startswith("{")]
    assert any('"level": "debug"' in line for line in log_lines), log_lines  # debug ran
    logs = "\n".join(log_lines)

    secrets = [key.split("_", 2)[2] for key in keys]  # the secret part of each API key
    secrets.append((tmp_path / "master.key").read_text().strip())
    for name in ("settler-keypair.json", "market-authority-keypair.json"):
        raw = bytes(json.loads((tmp_path / name).read_text()))
        secrets += [raw[:32].hex(), base64.b64encode(raw[:32]).decode(), str(list(raw[:8]))[1:-1]]
    for secret in secrets:
        assert secret not in logs, f"a secret ({secret[:6]}...) is in a log line"
