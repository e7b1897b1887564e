"""A simulated board (real firmware, MicroPython unix port) whose clock starts at the port's
epoch, as a board without a real-time clock does: it connects but does not trade until it has
the hub's time, then trades normally.

The board's clock is the port's moved back to 2000-01-01 (config `clock_offset_ms`, applied at
boot). First a CPython peer plays the hub: no birth and no answer before a time notice, the
birth and trading after two. Then a real hub (which publishes each board's time every second)
trades with such a (provisioned) board without refusing a single frame of it (none stamped in
2000).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from hub.security.accounts import hash_password
from hub.settings import load_master_secret
from hub.store import Store
from hub.tools.firmware.fleet import Fleet, FleetConfig, start_fleet
from shared_etp import schema as S
from shared_etp.compat import now_ms
from tests.firmware.conftest import BOARD_HEAP, MASTER, PLAIN_BOARD
from tests.firmware.fwpeer import Peer
from tests.hub.helpers import hub_settings, running_hub, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.micropython, pytest.mark.timeout(120)]
SITE = "clocktest"
PORT_EPOCH_MS = 946_684_800_000  # 2000-01-01


def at_port_epoch() -> dict[str, int]:
    """The override that starts a board's clock at the port's epoch."""
    return {"clock_offset_ms": PORT_EPOCH_MS - now_ms()}


def console_events(fleet: Fleet, device_id: int) -> list[dict]:
    path = fleet.by_id(device_id).console_log
    if not path.exists():
        return []
    events = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return events


async def test_board_at_port_epoch_waits_for_the_hub_time_then_trades(
    broker_url: str, tmp_path: Path
) -> None:
    cfg = FleetConfig(count=1, mqtt_url=broker_url, site=SITE, master_secret=MASTER,
                      data_dir=tmp_path, ptys=False, heap=BOARD_HEAP,
                      overrides={**PLAIN_BOARD, **at_port_epoch()})  # fmt: skip
    fleet = await start_fleet(cfg)
    try:
        async with Peer(broker_url, SITE, MASTER) as peer:
            deadline = time.monotonic() + 20
            while not any(e.get("ev") == "connected" for e in console_events(fleet, 1)):
                assert fleet.alive() == 1, console_events(fleet, 1)
                assert time.monotonic() < deadline, "the board never connected"
                await asyncio.sleep(0.1)
            # connected, but its clock reads 2000: no birth, no status, no answer
            with pytest.raises(TimeoutError):
                await peer.request(1, 0, S.QUERY, timeout=2.0, auc=1)
            assert not peer.births.get(1) and not peer.statuses.get(1) and not peer.raw
            # the hub's time: the first notice (kept retained) moves the clock, a newer one
            # sets it; the board then reconnects and publishes its birth
            await peer.notice(1, "time", S.NOTICE_TIME, 1000)
            await asyncio.sleep(0.5)
            assert not peer.births.get(1)
            await peer.notice(1, "time", S.NOTICE_TIME, 1000)
            birth = await peer.wait_for(lambda m: m["_leaf"] == "birth", timeout=10)
            assert abs(birth["ts"] - now_ms()) < 3000  # stamped with the hub's time
            query = await peer.request(1, 0, S.QUERY, auc=2)
            assert query["t"] == S.QUERY_RESPONSE and query["ereq"] > 0
            accept = await peer.request(1, 1001, S.BID, auc=2, price=25000, ereq=700)
            assert accept["t"] == S.BID_ACCEPT
            done = await peer.request(1, 1001, S.BID_CONFIRM, auc=2, price=25000, ereq=700)
            assert done["t"] == S.BID_ACCEPT
            connects = [e for e in console_events(fleet, 1) if e.get("ev") == "connected"]
            assert len(connects) == 2  # once to get the time, once with the will stamped by it
    finally:
        await fleet.stop()


async def test_hub_trades_with_a_board_that_started_at_the_port_epoch(tmp_path: Path) -> None:
    """The board is provisioned: a board without a clock publishes nothing before it has the
    hub's time, so the hub sends its time to the boards it has seen and those provisioned."""
    settings = hub_settings(tmp_path, auction_interval_ms=300)
    async with Store(settings.resolved_database_url()) as store:
        await store.provision_device(settings.site, 1, password_hash=hash_password("unused"))
    async with running_hub(settings) as hub:
        assert hub.auctions is not None and hub.registry is not None
        engine, registry = hub.auctions, hub.registry
        fleet = await start_fleet(FleetConfig(
            count=1, mqtt_url=hub.mqtt_url, site=settings.site,
            master_secret=load_master_secret(settings.master_secret_path()),
            data_dir=tmp_path / "boards", ptys=False, heap=BOARD_HEAP,
            overrides={"delivery_s": 3600, **at_port_epoch()},
        ))  # fmt: skip
        try:
            await wait_for(lambda: len(registry.online()) == 1, 30, "the board online")
            await wait_for(lambda: engine.totals.trades >= 2, 40, "two trades")
            await engine.stop()
        finally:
            await fleet.stop()
    assert hub.metrics.rejected_frames == {}  # not one frame of the board stamped in 2000
