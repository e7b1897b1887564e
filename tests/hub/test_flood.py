"""Flood protection (hub.devices.flood): the gate's buckets and quarantine, and a running hub
trading with simulated batteries while one client floods a battery's topics with replayed and
random frames: the flooded battery is quarantined (event, alert, no auctions), the others keep
trading and no trade the batteries committed is lost. The latency figures are printed (-s);
targets are for benchmarks, not this test."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiomqtt

from hub.devices.flood import FloodLimits, FrameGate
from hub.transport.broker import parse_mqtt_url
from shared_etp.topics import RESPONSE, STATUS, device_topic
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for


def _gate(**limits: float) -> tuple[FrameGate, list[str], list[tuple[int, int, int]], list[int]]:
    now = [0]
    rejected: list[str] = []
    quarantines: list[tuple[int, int, int]] = []
    gate = FrameGate(FloodLimits(**limits), lambda: now[0],  # type: ignore[arg-type]
                     lambda reason, _topic: rejected.append(reason),
                     lambda *args: quarantines.append(args))
    return gate, rejected, quarantines, now


def test_gate_buckets_sizes_and_quarantine() -> None:
    gate, rejected, quarantines, now = _gate(status_per_s=10, burst_s=1, quarantine_after=20,
                                             quarantine_s=5)
    status = device_topic("s", 7, STATUS)
    assert [gate.admit(status, b"x") for _ in range(12)] == [True] * 10 + [False] * 2
    assert rejected == ["rate_limited"] * 2
    assert gate.admit(device_topic("s", 8, STATUS), b"x")  # another battery: its own bucket
    assert gate.admit(device_topic("s", 7, RESPONSE), b"x")  # another class: its own bucket
    now[0] = 300  # 0.3 s at 10/s: 3 more
    assert [gate.admit(status, b"x") for _ in range(4)] == [True, True, True, False]
    assert not gate.admit(status, bytes(513)) and rejected[-1] == "oversized"
    assert gate.admit("not/a/device/topic", b"x")  # the hub's handler counts it
    for _ in range(18):  # 3 drops so far; the 21st in 10 s quarantines
        gate.admit(status, b"x")
    assert quarantines == [(7, 5300, 21)] and gate.in_quarantine(7, 5299)
    assert not gate.admit(device_topic("s", 7, RESPONSE), b"x")  # every frame of it
    assert rejected[-1] == "quarantined"
    now[0] = 5300
    assert gate.admit(status, b"x") and not gate.in_quarantine(7, 5300)  # let back in


async def test_a_flooded_battery_is_quarantined_and_the_others_keep_trading(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=200, flood_quarantine_after=200,
                            flood_quarantine_s=600, alert_check_interval_s=0.2)
    async with running_hub(settings) as hub:
        assert hub.auctions is not None and hub.alerts is not None
        engine, metrics = hub.auctions, hub.metrics
        captured: list[tuple[str, bytes]] = []
        async with sim_fleet(settings, hub.mqtt_url, count=4) as fleet:
            fleet.on_publish = lambda topic, frame: captured.append((topic, frame))
            await wait_for(lambda: engine.totals.trades >= 8, 30, "first trades")
            mine = [(t, f) for t, f in captured if "/bess/1/" in t]
            good_looking = [f for t, f in mine if t.endswith("/status")][:20] or [bytes(60)]
            host, port = parse_mqtt_url(hub.mqtt_url)
            status_topic = device_topic(settings.site, 1, STATUS)
            response_topic = device_topic(settings.site, 1, RESPONSE)
            trades_before = engine.totals.trades
            opened_for_1 = engine.totals.auctions_opened
            started = time.monotonic()
            sent = 0
            async with aiomqtt.Client(host, port, identifier="flooder") as flooder:
                for n in range(6000):  # ~10x what the four batteries send together, and more
                    frame = good_looking[n % len(good_looking)] if n % 2 else os.urandom(80)
                    await flooder.publish(status_topic if n % 3 else response_topic, frame)
                    sent += 1
                    if n % 200 == 0:
                        await asyncio.sleep(0.01)
            flood_s = time.monotonic() - started
            await wait_for(lambda: hub.status()["flood"]["quarantined"] == [1], 10,
                           "battery 1 quarantined")
            await wait_for(lambda: engine.totals.trades >= trades_before + 8, 30,
                           "the others trading on")
            quarantine_events = await hub.read_events(0, 100, ["device_quarantined"])
            committed = fleet.committed_trades()
        quarantined_at = {e["device_id"] for e in quarantine_events}
        opened_since = {e["device_id"] for e in await hub.read_events(
            quarantine_events[0]["seq"], 10_000, ["auction_opened"])}
        await wait_for(lambda: hub.alerts is not None and hub.alerts.open >= 1, 5, "the alert")
        rejected = dict(metrics.rejected_frames)
        query = metrics.latency["query"].summary()
        assert hub.store is not None
        trades = {t.auction_id for t in await hub.store.list_trades()}
    print(f"\nflood: {sent} frames in {flood_s:.2f} s on battery 1's topics; rejected "
          f"{rejected}; query latency after: p50 {query['p50_ms']} ms, p99 {query['p99_ms']} ms;"
          f" auctions opened before the flood {opened_for_1}")
    assert quarantined_at == {1}
    assert 1 not in opened_since and opened_since  # the others are auctioned, not battery 1
    assert rejected.get("rate_limited", 0) > 0 and rejected.get("quarantined", 0) > 0
    assert set(committed) <= trades  # nothing the batteries committed is missing
