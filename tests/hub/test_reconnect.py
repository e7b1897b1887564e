"""The hub's MQTT link survives a broker restart: it reconnects, resubscribes, trades on."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.runtime import HubRuntime
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


async def test_hub_reconnects_after_broker_restart(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
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
    captured = capfd.readouterr()
    logged = captured.out + captured.err
    assert "lost" in logged  # the outage was logged...
    assert "Traceback" not in logged, logged  # ...never as a crash


async def test_hub_started_without_its_broker_serves_live_and_trades_once_it_appears(
    tmp_path: Path,
) -> None:
    """Broker down at start: the hub does not exit; /health/live answers at once,
    /health/ready says not ready, and it connects and trades when the broker comes."""
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    url = f"mqtt://127.0.0.1:{port}"
    settings = hub_settings(tmp_path, url)
    hub = HubRuntime(settings)
    starting = asyncio.create_task(hub.start())
    try:
        base = f"http://127.0.0.1:{settings.http_port}"
        for _ in range(50):  # the server runs in this event loop: ask from a thread
            if await asyncio.to_thread(_http_status, base + "/health/live") == 200:
                break
            await asyncio.sleep(0.1)
        assert await asyncio.to_thread(_http_status, base + "/health/live") == 200
        assert await asyncio.to_thread(_http_status, base + "/health/ready") == 503
        assert not starting.done()  # still connecting, and already serving
        with _mosquitto(conf):
            await wait_listening(port)
            await starting
            await wait_for(lambda: hub.ready, 20, "ready")
            assert await asyncio.to_thread(_http_status, base + "/health/ready") == 200
            assert hub.auctions is not None
            auctions = hub.auctions
            async with sim_fleet(settings, url, count=3):
                await wait_for(lambda: auctions.totals.trades >= 2, 30, "trades")
    finally:
        if not starting.done():
            starting.cancel()
        await hub.stop()


def _http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
