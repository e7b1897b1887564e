"""The hub's MQTT link survives a broker restart: it reconnects, resubscribes, trades on."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers import MOSQUITTO_BIN, free_port, mosquitto_available, wait_listening
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.mosquitto]


@contextlib.contextmanager
def _mosquitto(conf: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([MOSQUITTO_BIN, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=5)


async def test_hub_reconnects_after_broker_restart(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
                    "persistence false\n")
    url = f"mqtt://127.0.0.1:{port}"
    settings = hub_settings(tmp_path, url)
    with _mosquitto(conf) as first:
        await wait_listening(port)
        async with running_hub(settings) as hub:
            assert hub.auctions is not None and hub.link is not None
            engine, link = hub.auctions, hub.link
            async with sim_fleet(settings, url, count=4):
                await wait_for(lambda: engine.totals.trades >= 3, 20, "trades")
                first.terminate()
                await asyncio.to_thread(first.wait, 5)
                await wait_for(lambda: not link.connected.is_set(), 5, "link down")
                # while the broker is away the hub does not claim to know who is online
                assert hub.status()["devices"]["online"] is None
                assert hub.status()["devices"]["state"] == "unknown"
                assert all(row["online"] is None for row in hub.devices())
                assert "batteries ?/4" in hub.summary_line()
                with _mosquitto(conf):
                    await wait_listening(port)
                    await wait_for(link.connected.is_set, 15, "link back up")
                    before = engine.totals.trades
                    await wait_for(lambda: engine.totals.trades >= before + 3, 30,
                                   "trading resumes after the broker restart")
                    assert hub.ready
    assert link.reconnects >= 1
