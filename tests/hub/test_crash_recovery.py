"""kill -9 of the hub mid-auction, then restart: no confirmed trade lost or duplicated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hub.settings import load_master_secret
from hub.store import Store, database_url_for
from hub.tools.sim import SimConfig, SimFleet
from tests.brokers import free_port, mosquitto_available, mosquitto_broker

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def _status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=2) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


class HubProcess:
    """`etp hub` as a child process (so it can be killed with SIGKILL)."""

    def __init__(self, data_dir: Path, mqtt_url: str) -> None:
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "ETP_DATA_DIR": str(data_dir), "ETP_MQTT_URL": mqtt_url,
            "ETP_HTTP_PORT": str(self.http_port), "ETP_AUCTION_INTERVAL_MS": "100",
            "ETP_ROUND_MS": "40", "ETP_LOG_LEVEL": "warning",
        })
        self.env.pop("ETP_DATABASE_URL", None)
        self.log = data_dir / "hub.log"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli.main", "hub"], cwd=REPO, env=self.env,
                stdout=log, stderr=log,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not await asyncio.to_thread(self.ready):
            if loop.time() > deadline:
                raise AssertionError("hub not ready after 30 s")
            await asyncio.sleep(0.1)

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hub exited {self.proc.returncode}: {self.log.read_text()}")
        try:
            return bool(_status(self.http_port)["ready"])
        except OSError:
            return False

    def market(self) -> dict[str, Any]:
        try:
            return _status(self.http_port)["market"]  # type: ignore[no-any-return]
        except OSError:
            return {}

    async def kill(self, sig: int) -> None:
        """Signal the hub and wait for it without blocking the simulated batteries."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait, 30)

    async def wait_market(self, predicate: Any, timeout_s: float, what: str) -> None:
        """Poll /api/v1/status off the event loop (the batteries share it) until predicate."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(await asyncio.to_thread(self.market)):
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(0.05)


async def test_kill_9_mid_auction_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed (the broker must outlive the killed hub)")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    master = load_master_secret(data_dir / "master.key")
    async with mosquitto_broker() as url:
        hub = HubProcess(data_dir, url)
        fleet = SimFleet(SimConfig(mqtt_url=url, site="site1", master_secret=master, count=8,
                                   overrides={"delivery_s": 36000}))
        try:
            await hub.start()
            await fleet.start()
            for _ in range(3):  # several crashes, each while auctions are open
                base = (await asyncio.to_thread(hub.market)).get("trades", 0)
                await hub.wait_market(lambda m, b=base: m.get("trades", 0) >= b + 5, 30,
                                      "trades")
                await hub.wait_market(lambda m: m.get("auctions_open", 0) >= 2, 10,
                                      "open auctions")
                await hub.kill(signal.SIGKILL)
                assert hub.proc is not None and hub.proc.returncode == -signal.SIGKILL
                await hub.start()
            await hub.wait_market(lambda m: m.get("trades", 0) >= 5, 30, "trades after restart")
            await hub.kill(signal.SIGINT)
            assert hub.proc is not None and hub.proc.returncode == 0
            await asyncio.sleep(3.5)  # batteries release any hold left unconfirmed
        finally:
            await hub.kill(signal.SIGKILL)
            await fleet.stop()
    committed = fleet.committed_trades()
    store = Store(database_url_for(data_dir))
    await store.start()
    try:
        trades = await store.list_trades()
        open_left = await store.open_auctions()
        events = await store.list_events(limit=100000)
    finally:
        await store.close()
    kept = {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
            for t in trades if t.status == "verified"}
    assert [t for t in trades if t.status in ("recorded", "unverified")] == []  # all decided
    assert len(kept) >= 15
    assert len({t.auction_id for t in trades}) == len(trades)  # no duplicate
    assert kept == committed  # none lost, none invented, same price and energy
    assert open_left == []  # every auction the crashes left open was resolved
    recovered = [e for e in events if e.kind == "auction_recovered"]
    assert len(recovered) >= 1  # the kills really hit open auctions

