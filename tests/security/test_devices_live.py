"""Provisioning against a running hub trading with simulated batteries (the firmware core on
CPython over the embedded broker): `etp device revoke N` from another process makes the hub
refuse N's frames and stop auctioning it within seconds; after `etp device rotate N` a battery
still on its old key trades on during the grace window, and one reflashed with its new bundle
(it reboots and announces itself under the new key) trades on with the hub switching to it;
the trades the batteries committed are the ones the store counts."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from firmware.etp_node.core import NodeCore
from hub.runtime import HubRuntime
from hub.security.accounts import hash_password
from hub.settings import Settings
from hub.store import Store
from hub.tools.sim import SimFleet
from shared_etp.replay import next_epoch
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for

ETP = [sys.executable, "-m", "hub.cli.main"]
pytestmark = [pytest.mark.timeout(240)]


def _etp(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """`etp` in another process, on the running hub's data dir and database."""
    env = {
        **os.environ,
        "ETP_DATA_DIR": str(settings.data_dir),
        "ETP_SITE": settings.site,
        "ETP_DATABASE_URL": settings.resolved_database_url(),
    }
    return subprocess.run([*ETP, *args], capture_output=True, text=True, timeout=120, env=env)


async def _provision(settings: Settings, *device_ids: int) -> None:
    """Provision batteries before the hub starts (generation 0: the simulator's keys)."""
    async with Store(settings.resolved_database_url()) as store:
        for device_id in device_ids:
            await store.provision_device(
                settings.site, device_id, password_hash=hash_password("unused")
            )


async def _trades_of(hub: HubRuntime, device_id: int, since_ms: int) -> int:
    assert hub.store is not None
    return sum(
        1
        for t in await hub.store.list_trades()
        if t.device_id == device_id and t.confirmed_ms >= since_ms
    )


async def _wait_trades(
    hub: HubRuntime,
    device_id: int,
    since_ms: int,
    count: int,
    timeout_s: float,
    what: str,
    fleet: SimFleet | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while await _trades_of(hub, device_id, since_ms) < count:
        if time.monotonic() > deadline:
            seen = ""
            if fleet is not None:  # what the battery made of the bids: energy, rejections
                core = fleet.cores[device_id]
                seen = (
                    f" (battery {device_id}: sellable {core.sellable_wh()} Wh, "
                    f"rejected bids {core.stats['reject_reasons']}, "
                    f"protocol errors {core.stats['protocol_errors']})"
                )
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{seen}")
        await asyncio.sleep(0.2)


async def _quiesce_and_compare(hub: HubRuntime, fleet: SimFleet) -> dict[int, Any]:
    """Pause trading, let every auction end and every trade be decided, then check that the
    verified trades in the store are exactly what the batteries committed."""
    assert hub.operator is not None and hub.auctions is not None and hub.store is not None
    hub.operator.pause_trading({"name": "test"}, int(time.time() * 1000))
    driver = hub.auctions
    await wait_for(
        lambda: not driver.runs and not driver.reconciler.unverified,
        30,
        "auctions over and trades decided",
    )
    committed = fleet.committed_trades()
    # An auction's close, with its trade's status, is written in the background just after
    # the auction ends (AuctionRecords): give the last ones a moment to land.
    deadline = time.monotonic() + 10
    while True:
        verified = {
            t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
            for t in await hub.store.list_trades()
            if t.status == "verified"
        }
        if verified == committed or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert verified == committed  # none lost, none invented
    return committed


async def test_a_revoked_battery_is_refused_within_seconds(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=200)
    await _provision(settings, 1, 2, 3)
    async with running_hub(settings) as hub:
        assert hub.registry is not None and hub.auctions is not None
        metrics, registry = hub.metrics, hub.registry
        async with sim_fleet(
            settings, hub.mqtt_url, count=3, overrides={"status_interval_ms": 500}
        ) as fleet:
            start_ms = int(time.time() * 1000)
            await _wait_trades(hub, 1, start_ms, 1, 30, "battery 1 trading")
            revoked = await asyncio.to_thread(_etp, settings, "device", "revoke", "1")
            assert revoked.returncode == 0, revoked.stderr
            returned = time.monotonic()
            await wait_for(
                lambda: (
                    not registry.devices[1].online and metrics.rejected_frames.get("revoked", 0) > 0
                ),
                5,
                "battery 1 refused within 5 s of the revocation",
            )
            latency_s = time.monotonic() - returned
            refused_ms = int(time.time() * 1000)
            assert hub.store is not None
            [row] = [
                r
                for r in await hub.store.list_device_credentials(settings.site)
                if r.device_id == 1
            ]
            assert row.revoked_ms is not None
            others_since = int(time.time() * 1000)
            await _wait_trades(hub, 2, others_since, 1, 30, "battery 2 trading on")
            await _wait_trades(hub, 3, others_since, 1, 30, "battery 3 trading on")
            assert not registry.devices[1].online and 1 not in hub.auctions.runs
            failures = await hub.read_events(0, 1000, ["device_failure"])
            revocations = await hub.read_events(0, 100, ["device_revoked"])
            opened = await hub.read_events(0, 100_000, ["auction_opened"])
            committed = await _quiesce_and_compare(hub, fleet)
    [failure] = [e for e in failures if e["device_id"] == 1]
    print(
        f"\nrevoke: battery 1 failed {failure['ts_ms'] - row.revoked_ms} ms after the "
        f"revocation was committed, its frames refused by {refused_ms - row.revoked_ms} ms "
        f"({latency_s * 1000:.0f} ms after `etp device revoke` returned); "
        f"rejected {dict(metrics.rejected_frames)}"
    )
    assert failure["payload"]["source"] == "revoked"
    # the audit log has it, from the same read of the credentials that refused the battery
    assert [(e["device_id"], e["payload"]["at_ms"]) for e in revocations] == [
        (1, row.revoked_ms)]
    assert failure["ts_ms"] - row.revoked_ms < 5000
    late = [e for e in opened if e["device_id"] == 1 and e["ts_ms"] > failure["ts_ms"]]
    assert late == []  # no auction for it once the revocation took effect
    assert {d for d, *_ in committed.values()} == {1, 2, 3}


def _reflash(fleet: SimFleet, device_id: int, key: bytes) -> NodeCore:
    """The battery is given its new bundle as a board is: reflashed, it reboots with the new
    key and a new boot epoch (holds and replay windows were in RAM and are gone; its pack,
    audit trail and settings are kept) and publishes a birth and a status signed with the new
    key, between two of the simulator's steps as a board's reboot is between two frames."""
    old = fleet.cores[device_id]
    evaluator = old.evaluator
    config = {
        "device_id": device_id,
        "site": fleet.config.site,
        "key": key,
        "notice_key": old.notice_keys.key_for(0, 0),
        "epoch": next_epoch(old.sender.epoch, int(time.time())),
        "reserve_mc": evaluator.reserve_mc,
        "dynamic_reserve": evaluator.dynamic,
        "scarcity_gain_pct": evaluator.scarcity_gain_pct,
        "market_weight_pct": evaluator.market_weight_pct,
        "min_reputation": evaluator.min_reputation,
        "pct_for_sale": old.pct_for_sale,
        "floor_wh": old.floor_wh,
        "hold_timeout_ms": old.hold_timeout_ms,
        "status_interval_ms": old.status_interval_ms,
        "delivery_s": old.delivery_s,
    }
    core = NodeCore(config, old.battery, old.audit)
    fleet.cores[device_id] = core  # the fleet hands it its frames and ticks from now
    connection = fleet._owner[device_id]
    for topic, frame in (core.birth(), core.status()):
        fleet._publish(connection, topic, frame)
    return core


async def test_rotated_batteries_trade_on_old_key_in_grace_and_new_key_after(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=200, rotation_grace_s=300)
    await _provision(settings, 1, 2, 3)
    async with running_hub(settings) as hub:
        keyring = hub.keyring
        assert keyring is not None
        # Sold energy leaves the pack for the whole test (delivery_s 36000) and a battery
        # prices its last sellable energy out of the aggregators' reach (scarcity premium):
        # packs large enough that the trades this test waits for, however many more happen
        # meanwhile on a slow machine, never run one dry.
        async with sim_fleet(
            settings,
            hub.mqtt_url,
            count=3,
            capacity_wh=(100_000, 100_000),
            overrides={"status_interval_ms": 500},
        ) as fleet:
            await _wait_trades(hub, 1, 0, 1, 30, "first trades", fleet)
            out = tmp_path / "bundle-1"
            rotated = await asyncio.to_thread(
                _etp, settings, "device", "rotate", "1", "--out", str(out)
            )
            assert rotated.returncode == 0, rotated.stderr
            rotated2 = await asyncio.to_thread(_etp, settings, "device", "rotate", "2")
            assert rotated2.returncode == 0, rotated2.stderr
            await wait_for(
                lambda: keyring.generation(1) == 1 and keyring.generation(2) == 1,
                5,
                "the hub reading the rotations",
            )
            since = int(time.time() * 1000)
            # both still hold generation 0: accepted in the grace window, signed to with it
            await _wait_trades(hub, 1, since, 2, 30, "battery 1 trading on its old key", fleet)
            await _wait_trades(hub, 2, since, 2, 30, "battery 2 trading on its old key", fleet)
            assert keyring.signing_generation(1) == 0
            new_key = bytes.fromhex(json.loads((out / "etp_config.json").read_text())["key"])
            assert new_key == keyring.generation_key(1, 1)
            reflashed = _reflash(fleet, 1, new_key)
            await wait_for(
                lambda: keyring.signing_generation(1) == 1,
                10,
                "the hub signing to battery 1 with its new key",
            )
            switched = int(time.time() * 1000)
            await _wait_trades(hub, 1, switched, 3, 30, "battery 1 trading on its new key", fleet)
            await _wait_trades(hub, 2, switched, 2, 30, "battery 2 still on its old key", fleet)
            assert keyring.signing_generation(2) == 0
            # the reflashed board holds only the new key: every trade it commits is made on it
            await wait_for(
                lambda: reflashed.stats["trades"] >= 3, 30, "battery 1 committing on its new key"
            )
            rejected = dict(hub.metrics.rejected_frames)
            await _quiesce_and_compare(hub, fleet)
    print(f"\nrotate: rejected frames around the key switch {rejected}")
    assert "revoked" not in rejected and "unknown_key" not in rejected


async def test_with_provisioning_required_an_unknown_battery_is_refused(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=200, require_provisioning=True)
    await _provision(settings, 1, 2)
    async with running_hub(settings) as hub:
        assert hub.registry is not None
        async with sim_fleet(
            settings, hub.mqtt_url, count=3, overrides={"status_interval_ms": 500}
        ) as fleet:
            await _wait_trades(hub, 1, 0, 1, 30, "battery 1 trading")
            await _wait_trades(hub, 2, 0, 1, 30, "battery 2 trading")
            await wait_for(
                lambda: hub.metrics.rejected_frames.get("unknown_key", 0) >= 2,
                10,
                "battery 3's frames refused",
            )
            device = hub.registry.devices.get(3)
            assert device is None or not device.online
            await _quiesce_and_compare(hub, fleet)
            assert hub.store is not None
            assert not [t for t in await hub.store.list_trades() if t.device_id == 3]
