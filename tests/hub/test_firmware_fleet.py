"""The hub trading with batteries that run the REAL firmware on the MicroPython unix port."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.settings import load_master_secret
from hub.tools.firmware.audit import read_audit_dir
from hub.tools.firmware.fleet import FleetConfig, start_fleet
from tests.conftest import micropython_available
from tests.hub.helpers import hub_settings, running_hub, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.micropython]


async def test_real_firmware_boards_trade_above_reserve_and_fail_fast(tmp_path: Path) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is not installed")
    settings = hub_settings(tmp_path, auction_interval_ms=300)
    async with running_hub(settings) as hub:
        assert hub.auctions is not None and hub.registry is not None
        engine, registry = hub.auctions, hub.registry
        fleet = await start_fleet(FleetConfig(
            count=3, mqtt_url=hub.mqtt_url, site=settings.site,
            master_secret=load_master_secret(settings.master_secret_path()),
            data_dir=tmp_path / "boards", ptys=False, heap="128K",
            overrides={"delivery_s": 3600},
        ))
        try:
            await wait_for(lambda: len(registry.online()) == 3, 30, "three boards online")
            await wait_for(lambda: engine.totals.trades >= 4, 40, "four trades")
            summary = engine.summary()
            misses_before_kill = hub.metrics.total_deadline_misses
            # kill -9 a board: the broker publishes its will; the hub fails it at once
            await fleet.kill(2)
            await wait_for(lambda: not registry.devices[2].online, 2, "board 2 offline")
            await engine.stop()  # hub stops trading before the other boards go away
        finally:
            await fleet.stop()
        assert hub.store is not None
        trades = await hub.store.list_trades()
    assert summary["mean_premium_pct"] > 0
    assert len(trades) >= 4 and all(t.price_mc >= t.reserve_mc for t in trades)
    assert hub.metrics.rejected_frames == {}
    assert misses_before_kill == 0
    # what the boards' audit trails (on their flash) say they sold is what the hub recorded
    committed = {}
    for board in fleet.devices:
        for record in read_audit_dir(board.flash_dir / "audit").records:
            if record.get("k") == "trade":
                committed[record["auc"]] = (board.device_id, record["b"], record["p"], record["e"])
    recorded = {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh) for t in trades}
    survivors = {auc: t for auc, t in recorded.items() if t[0] != 2}
    assert {auc: t for auc, t in committed.items() if t[0] != 2} == survivors
    # board 2 died mid-flight: whatever it committed, the hub has (it may have one unverified)
    assert {auc for auc, t in committed.items() if t[0] == 2} <= set(recorded)
