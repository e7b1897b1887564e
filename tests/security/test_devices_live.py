"""Provisioning against a running hub trading with simulated batteries (the firmware core on
CPython over the embedded broker): `etp device revoke N` from another process makes the hub
refuse N's frames and stop auctioning it within seconds; after `etp device rotate N` a battery
still on its old key trades on during the grace window, and one given its new key trades on
with the hub switching to it; the trades the batteries committed are the ones the store
counts."""

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

from hub.runtime import HubRuntime
from hub.security.accounts import hash_password
from hub.settings import Settings
from hub.store import Store
from hub.tools.sim import SimFleet
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
    hub: HubRuntime, device_id: int, since_ms: int, count: int, timeout_s: float, what: str
) -> None:
    deadline = time.monotonic() + timeout_s
    while await _trades_of(hub, device_id, since_ms) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
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
    verified = {
        t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
        for t in await hub.store.list_trades()
        if t.status == "verified"
    }
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
    assert failure["ts_ms"] - row.revoked_ms < 5000
    late = [e for e in opened if e["device_id"] == 1 and e["ts_ms"] > failure["ts_ms"]]
    assert late == []  # no auction for it once the revocation took effect
    assert {d for d, *_ in committed.values()} == {1, 2, 3}


def _switch_key(fleet: SimFleet, device_id: int, key: bytes) -> None:
    """The battery is given its new bundle: it signs and verifies with the new key from now
    (a board reflashed; the simulator keeps its sequence numbers)."""
    core = fleet.cores[device_id]
    core.sender.key = key
    core.receiver.keyring.add(device_id, key)


async def test_rotated_batteries_trade_on_old_key_in_grace_and_new_key_after(
    tmp_path: Path,
) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=200, rotation_grace_s=300)
    await _provision(settings, 1, 2, 3)
    async with running_hub(settings) as hub:
        keyring = hub.keyring
        assert keyring is not None
        async with sim_fleet(
            settings, hub.mqtt_url, count=3, overrides={"status_interval_ms": 500}
        ) as fleet:
            await _wait_trades(hub, 1, 0, 1, 30, "first trades")
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
            await _wait_trades(hub, 1, since, 2, 30, "battery 1 trading on its old key")
            await _wait_trades(hub, 2, since, 2, 30, "battery 2 trading on its old key")
            assert keyring.signing_generation(1) == 0
            new_key = bytes.fromhex(json.loads((out / "etp_config.json").read_text())["key"])
            _switch_key(fleet, 1, new_key)
            await wait_for(
                lambda: keyring.signing_generation(1) == 1,
                10,
                "the hub signing to battery 1 with its new key",
            )
            switched = int(time.time() * 1000)
            await _wait_trades(hub, 1, switched, 3, 30, "battery 1 trading on its new key")
            await _wait_trades(hub, 2, switched, 2, 30, "battery 2 still on its old key")
            assert keyring.signing_generation(2) == 0
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
