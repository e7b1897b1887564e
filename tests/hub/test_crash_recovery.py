"""kill -9 of the hub mid-auction, then restart: no confirmed trade lost or duplicated."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from hub.settings import load_master_secret
from hub.store import Store, database_url_for
from hub.tools.sim import SimConfig, SimFleet
from tests.brokers import mosquitto_available, mosquitto_broker
from tests.hub.processes import HubProcess, trades_at_least

pytestmark = pytest.mark.slow


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
                await hub.wait_market(trades_at_least(base + 5), 30, "trades")
                await hub.wait_market(lambda m: m.get("auctions_open", 0) >= 2, 10,
                                      "open auctions")
                await hub.kill(signal.SIGKILL)
                assert hub.proc is not None and hub.proc.returncode == -signal.SIGKILL
                await hub.start()
            await hub.wait_market(trades_at_least(5), 30, "trades after restart")
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

