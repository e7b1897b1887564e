"""Device failures (last will and silence) and hostile frames on device topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiomqtt
import pytest

from hub.settings import load_master_secret
from hub.transport.broker import parse_mqtt_url
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key
from shared_etp.schema import (
    BESS_STATUS,
    BID_ACCEPT,
    DEVICE_FAILURE,
    HEALTH_OFFLINE,
    HEALTH_OK,
    REASON_LINK_LOST,
)
from shared_etp.topics import DEATH, RESPONSE, STATUS, device_topic
from tests.brokers import mosquitto_available, mosquitto_broker
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for

pytestmark = pytest.mark.slow


async def test_last_will_fails_device_and_terminates_its_auction_fast(tmp_path: Path) -> None:
    if not mosquitto_available():
        pytest.skip("mosquitto is not installed")  # amqtt fires wills too; Mosquitto is exact
    async with mosquitto_broker() as url:
        settings = hub_settings(tmp_path, url, auction_interval_ms=100, round_ms=150)
        async with running_hub(settings) as hub:
            assert hub.auctions is not None and hub.registry is not None
            engine, registry = hub.auctions, hub.registry
            async with sim_fleet(settings, url, count=3, connections=3) as fleet:
                await wait_for(lambda: engine.totals.trades >= 3, 20, "first trades")
                await wait_for(lambda: 2 in engine.runs and engine.runs[2].auction_id > 0, 10,
                               "an open auction on battery 2")
                auction_id = engine.runs[2].auction_id
                crashed_at = time.monotonic()
                fleet.crash(2)
                await wait_for(lambda: not registry.devices[2].online, 2, "battery 2 offline")
                noticed_ms = (time.monotonic() - crashed_at) * 1000
                await wait_for(lambda: 2 not in engine.runs, 2, "auction on 2 ended")
                trades_before = engine.totals.trades
                await wait_for(lambda: engine.totals.trades >= trades_before + 3, 20,
                               "trading goes on with the other batteries")
            assert hub.store is not None
            row = next(a for a in await hub.store.list_auctions() if a.id == auction_id)
    # the will went broker -> hub and the hub acted on it well inside the 200 ms deadline
    assert noticed_ms < 200, noticed_ms
    assert max(engine.totals.failure_reaction_ms) < 200
    assert row.status in ("terminated", "cleared")  # cleared only if it was committing
    assert registry.devices[2].failures == 1


async def test_silent_battery_is_failed_by_status_deadline(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, status_period_ms=300, liveness_factor=3.0)
    master = load_master_secret(settings.master_secret_path())
    keyring = Keyring()
    keyring.add(3, derive_key(master, 3), owner=0)  # the hub signs device 3's loss as src 0
    notices: list[tuple[dict[str, int], bool]] = []
    async with running_hub(settings) as hub:
        assert hub.registry is not None
        registry = hub.registry
        host, port = parse_mqtt_url(hub.mqtt_url)
        async with aiomqtt.Client(host, port, identifier="death-watcher") as watcher:
            await watcher.subscribe(device_topic(settings.site, 3, DEATH), qos=1)

            async def watch() -> None:
                async for message in watcher.messages:
                    assert isinstance(message.payload, bytes)
                    notices.append((decode_frame(message.payload, keyring), message.retain))

            watching = asyncio.create_task(watch())
            async with sim_fleet(settings, hub.mqtt_url, count=3) as fleet:
                for core in fleet.cores.values():
                    core.status_interval_ms = 300
                await wait_for(lambda: len(registry.online()) == 3, 10, "three online")
                fleet.mute(3)  # shared connection: no will; only the deadline can notice
                muted_at = time.monotonic()
                await wait_for(lambda: not registry.devices[3].online, 5, "battery 3 failed")
                silent_s = time.monotonic() - muted_at
                assert registry.devices[1].online and registry.devices[2].online
                await wait_for(lambda: bool(notices), 2, "the hub's DeviceFailure on death")
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
        rejected = sum(hub.metrics.rejected_frames.values())
        failures = registry.devices[3].failures
    # limit is 3 x 300 ms after the last frame, swept every 50 ms
    assert 0.3 < silent_s < 1.5
    # the hub announced the loss: signed with device 3's key by the hub, not retained
    assert len(notices) == 1
    msg, retained = notices[0]
    assert (msg["t"], msg["src"], msg["kid"]) == (DEVICE_FAILURE, 0, 3)
    assert msg["reason"] == REASON_LINK_LOST and msg["health"] == HEALTH_OFFLINE
    assert not retained
    # hearing its own notice back is neither a rejected frame nor a second failure
    assert rejected == 0 and failures == 1


async def test_garbage_unsigned_and_replayed_frames_are_rejected_while_trading(
    tmp_path: Path,
) -> None:
    # the frames' checks, not the flood gate (tests/hub/test_flood.py): no rate limit here
    settings = hub_settings(tmp_path, flood_status_per_s=10_000, flood_response_per_s=10_000)
    async with running_hub(settings) as hub:
        assert hub.auctions is not None
        engine = hub.auctions
        captured: list[tuple[str, bytes]] = []
        async with sim_fleet(settings, hub.mqtt_url, count=4) as fleet:
            fleet.on_publish = lambda topic, frame: captured.append((topic, frame))
            await wait_for(lambda: engine.totals.trades >= 3, 20, "first trades")
            host, port = parse_mqtt_url(hub.mqtt_url)
            wrong_key = Sender(1, 1, derive_key(b"some other site secret!!", 1), 1)
            status_topic = device_topic(settings.site, 1, STATUS)
            replayed = [(t, f) for t, f in captured if t.endswith("/resp")][:5]
            async with aiomqtt.Client(host, port, identifier="attacker") as attacker:
                for _ in range(20):
                    await attacker.publish(status_topic, os.urandom(60), qos=1)
                    await attacker.publish(device_topic(settings.site, 2, RESPONSE), b"\xa1",
                                           qos=1)
                    frame, _ = wrong_key.frame(BESS_STATUS, erem=1, health=HEALTH_OK, volt=1,
                                               dis=0, soc=1)
                    await attacker.publish(status_topic, frame, qos=1)
                    body = frame[:-32]
                    await attacker.publish(status_topic, body + bytes(32), qos=1)  # zero tag
                    # a forged BidAccept for a pending bid must not be taken as an answer
                    forged, _ = wrong_key.frame(BID_ACCEPT, auc=1, price=1, ereq=1)
                    await attacker.publish(device_topic(settings.site, 1, RESPONSE), forged,
                                           qos=1)
                for topic, frame in replayed:
                    await attacker.publish(topic, frame, qos=1)
            trades_before = engine.totals.trades
            await wait_for(lambda: engine.totals.trades >= trades_before + 3, 20,
                           "trading continues")
            committed = fleet.committed_trades()
        rejected = dict(hub.metrics.rejected_frames)
        assert hub.store is not None
        trades = {t.auction_id for t in await hub.store.list_trades()}
    assert rejected.get("bad_tag", 0) >= 60  # wrong key, zero tag, forged BidAccept (x20)
    # 20 random blobs + 20 one-byte frames: rejected for whatever rule they break first
    assert sum(rejected.values()) >= 60 + 40 + len(replayed)
    assert rejected.get("truncated", 0) >= 20
    assert rejected.get("replay", 0) + rejected.get("expired", 0) >= len(replayed) > 0
    assert set(committed) <= trades  # nothing the batteries committed is missing
    await asyncio.sleep(0)
