"""The embedded broker runs in its own process: started and stopped by the hub, gone with it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from tests.brokers import free_port

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _ready(http_port: int) -> bool:
    try:
        url = f"http://127.0.0.1:{http_port}/health/ready"  # open: needs no API key
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(json.loads(resp.read())["status"] == "ready")
    except OSError:
        return False


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.mark.parametrize("how", ["sigint", "sigkill"])
def test_embedded_broker_is_a_child_process_that_ends_with_the_hub(
    tmp_path: Path, how: str
) -> None:
    http_port, mqtt_port = free_port(), free_port()
    env = dict(os.environ)
    env.update({
        "ETP_DATA_DIR": str(tmp_path), "ETP_HTTP_PORT": str(http_port),
        "ETP_MQTT_PORT": str(mqtt_port), "ETP_LOG_LEVEL": "warning",
    })
    for name in ("ETP_MQTT_URL", "ETP_DATABASE_URL"):
        env.pop(name, None)
    log = tmp_path / "hub.log"
    with open(log, "wb") as out:
        hub = subprocess.Popen([sys.executable, "-m", "hub.cli.main", "hub"], cwd=REPO,
                               env=env, stdout=out, stderr=out)
    broker: psutil.Process | None = None
    try:
        _wait(lambda: hub.poll() is not None or _ready(http_port), 30, "hub ready")
        assert hub.poll() is None, log.read_text()
        children = psutil.Process(hub.pid).children()
        assert len(children) == 1  # the broker, in its own process (its own core)
        broker = children[0]
        assert "hub.transport.broker" in " ".join(broker.cmdline())
        assert _accepts(mqtt_port)
        hub.send_signal(signal.SIGINT if how == "sigint" else signal.SIGKILL)
        hub.wait(30)
        # stopped by the hub, or (hub killed) on its own when the hub's pipe closes
        broker.wait(10)
        _wait(lambda: not _accepts(mqtt_port), 5, "the broker port to close")
    finally:
        if hub.poll() is None:
            hub.kill()
            hub.wait(10)
        if broker is not None and broker.is_running():
            broker.kill()
    if how == "sigint":
        assert hub.returncode == 0, log.read_text()
