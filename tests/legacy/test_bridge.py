"""Legacy batteries (test doubles of the Go prototype's) trade through the bridge with a real
hub and its embedded broker: never oversold, several per bridge, lost and found again."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from hub.legacy import BridgeConfig, DoubleConfig, LegacyBatteryDouble, LegacyBridge, LegacyTarget
from hub.settings import Settings, load_master_secret
from hub.store import Store, database_url_for
from tests.hub.helpers import hub_settings, running_hub, wait_for

pytestmark = pytest.mark.slow

FIRST_ID = 60001


@contextlib.asynccontextmanager
async def _doubles(*configs: DoubleConfig) -> AsyncIterator[list[LegacyBatteryDouble]]:
    doubles = [LegacyBatteryDouble(config) for config in configs]
    for double in doubles:
        await double.start()
    try:
        yield doubles
    finally:
        for double in doubles:
            await double.stop()


@contextlib.asynccontextmanager
async def _bridge(
    settings: Settings, mqtt_url: str, doubles: list[LegacyBatteryDouble], **kwargs: object
) -> AsyncIterator[LegacyBridge]:
    bridge = LegacyBridge(
        BridgeConfig(
            targets=[
                LegacyTarget("127.0.0.1", double.port, FIRST_ID + index)
                for index, double in enumerate(doubles)
            ],
            mqtt_url=mqtt_url,
            site=settings.site,
            master_secret=load_master_secret(settings.master_secret_path()),
            audit_dir=settings.data_dir / "legacy-audit",
            **kwargs,  # type: ignore[arg-type]
        )
    )
    await bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()


async def _verified(data_dir: Path) -> Counter[tuple[int, int, int]]:
    """(device, price, energy) of every verified trade in the hub's store; the price as the
    legacy battery was told it (its field has 0.01 c/kWh steps: rounded down)."""
    store = Store(database_url_for(data_dir))
    await store.start()
    try:
        trades = await store.list_trades()
    finally:
        await store.close()
    return Counter(
        (t.device_id, t.price_mc - t.price_mc % 10, t.energy_wh)
        for t in trades
        if t.status == "verified"
    )


async def test_a_legacy_battery_trades_and_is_never_oversold(tmp_path: Path) -> None:
    # It offers 2.5 kWh (5 kWh remaining, 50 % for sale) and would accept any bid at reserve
    # for ever; the hub's lots are up to 1 kWh.
    settings = hub_settings(tmp_path, aggregators=3)
    config = DoubleConfig(remaining_wh=5000, pct_for_sale=5000, reserve_mc=18000)
    async with (
        running_hub(settings) as hub,
        _doubles(config) as [double],
        _bridge(settings, hub.mqtt_url, [double]) as bridge,
    ):
        battery = bridge.batteries[FIRST_ID]
        assert hub.auctions is not None and hub.registry is not None
        registry = hub.registry
        await wait_for(
            lambda: FIRST_ID in registry.devices and registry.devices[FIRST_ID].online,
            10,
            "the bridged birth",
        )
        await wait_for(
            lambda: battery.pack.offered_wh() < settings.min_lot_wh,
            40,
            "the legacy battery to sell out",
        )
        await asyncio.sleep(2.0)  # the hub keeps auctioning: nothing more is sold
        await hub.auctions.stop()
        await asyncio.sleep(0.5)
    assert double.sold_wh <= double.offered_wh == 2500
    assert double.sold_wh > 2500 - settings.min_lot_wh
    assert double.sold_wh == battery.pack.sold_wh
    assert double.garbled == 0  # the bridge's writes reached its naive reader one at a time
    # the prototype would have accepted more: it still says yes to any bid at its reserve
    assert (double.answer({"t": 3, "id": 1, "price": 18000, "ereq": 1000}) or {})["t"] == 4
    verified = await _verified(tmp_path)
    assert verified == Counter((FIRST_ID, price, energy) for price, energy in double.confirmed)
    assert all(price >= 18000 for price, _energy in double.confirmed)


async def test_two_legacy_batteries_through_one_bridge_with_chunked_streams(
    tmp_path: Path,
) -> None:
    # One writes each answer in two pieces (a line split across reads), the other glues an
    # extra report to each answer (two lines in one read, no separator).
    settings = hub_settings(tmp_path, aggregators=3)
    configs = (
        DoubleConfig(device_id=1, remaining_wh=40000, split_answers=True, reserve_mc=19000),
        DoubleConfig(device_id=2, remaining_wh=40000, glue_reports=True, reserve_mc=21000),
    )
    async with (
        running_hub(settings) as hub,
        _doubles(*configs) as doubles,
        _bridge(settings, hub.mqtt_url, doubles) as bridge,
    ):
        await wait_for(
            lambda: all(len(d.confirmed) >= 3 for d in doubles),
            40,
            "three trades on each legacy battery",
        )
        assert hub.auctions is not None
        await hub.auctions.stop()
        await asyncio.sleep(0.5)
        stats = bridge.stats()
    verified = await _verified(tmp_path)
    for index, double in enumerate(doubles):
        device = FIRST_ID + index
        assert Counter({k: v for k, v in verified.items() if k[0] == device}) == Counter(
            (device, price, energy) for price, energy in double.confirmed
        )
        assert double.garbled == 0
        assert bridge.batteries[device].link.stream.garbled == 0
    assert [s["trades"] for s in stats] == [len(d.confirmed) for d in doubles]


async def test_a_lost_legacy_battery_fails_at_the_hub_and_trades_again_after_reconnect(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, aggregators=2)
    config = DoubleConfig(remaining_wh=40000)
    async with (
        running_hub(settings) as hub,
        _doubles(config) as [double],
        _bridge(settings, hub.mqtt_url, [double], backoff_max_s=1.0) as bridge,
    ):
        battery = bridge.batteries[FIRST_ID]
        assert hub.registry is not None
        devices = hub.registry.devices
        await wait_for(lambda: len(double.confirmed) >= 2, 30, "trades before the loss")
        await double.stop()
        lost_at = time.monotonic()
        await wait_for(lambda: not devices[FIRST_ID].online, 3, "DeviceFailure at the hub")
        latency_s = time.monotonic() - lost_at
        assert devices[FIRST_ID].failures >= 1
        await asyncio.sleep(2.5)  # the bridge keeps trying, backing off (capped at 1 s)
        assert battery.link.connect_failures >= 3
        assert battery.link.last_backoff_s <= 1.0
        sold_before = len(double.confirmed)
        await double.start()  # the same port again
        back_at = time.monotonic()
        await wait_for(lambda: devices[FIRST_ID].online, 5, "re-registration")
        await wait_for(lambda: len(double.confirmed) > sold_before, 20, "trading again")
        print(
            f"disconnect -> DeviceFailure {latency_s * 1000:.0f} ms, "
            f"back online after {time.monotonic() - back_at:.2f} s"
        )
    assert latency_s < 2.0


async def test_a_sale_the_legacy_battery_refuses_is_no_trade(tmp_path: Path) -> None:
    # It reports one reserve but refuses every bid (as if its reserve rose since): the bridge
    # answers the hub's confirms with BidReject, and nobody records a trade
    settings = hub_settings(tmp_path, aggregators=2)
    async with (
        running_hub(settings) as hub,
        _doubles(DoubleConfig(remaining_wh=40000)) as [double],
        _bridge(settings, hub.mqtt_url, [double]) as bridge,
    ):
        double.refuse_bids = True
        battery = bridge.batteries[FIRST_ID]
        await wait_for(lambda: battery.legacy_refused >= 3, 30, "three refused sales")
        assert hub.auctions is not None
        await hub.auctions.stop()
        await asyncio.sleep(0.5)
        assert hub.registry is not None and hub.registry.devices[FIRST_ID].online
    assert double.confirmed == [] and double.bids_rejected >= 3
    assert battery.trades() == 0 and battery.pack.sold_wh == 0
    assert not battery.core.ledger.holds  # each refused sale's hold was released
    assert sum(n for key, n in (await _verified(tmp_path)).items() if key[0] == FIRST_ID) == 0
