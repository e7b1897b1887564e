"""Alerts: the rules (pure), the store's one-open-alert-per-key counting, and a running hub that
alerts on a battery gone silent and offline and on a burst of rejected frames, lists them over
the API and lets an operator (not a viewer) acknowledge them."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import aiomqtt

from hub.alerts import AlertRules
from hub.auth import Role
from hub.events import Event, EventKind
from hub.runtime import HubRuntime
from hub.store import Store, database_url_for
from hub.transport.broker import parse_mqtt_url
from shared_etp.topics import STATUS, device_topic
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for


def _event(kind: EventKind, ts_ms: int, device_id: int | None = None, **payload: Any) -> Event:
    return Event(1, kind, ts_ms, device_id, None, payload)


def test_rules_raise_faults_at_once_offline_after_the_delay_and_rates_once_per_episode() -> None:
    rules = AlertRules(offline_delay_ms=60_000, deadline_misses_per_min=10,
                       rejected_frames_per_min=5)
    fault = rules.on_event(_event(EventKind.DEVICE_FAILURE, 0, 7, reason=10, source="will"))
    assert fault is not None and fault.severity == "critical" and fault.device_id == 7
    assert "voltage_out_of_range" in fault.message
    silent = rules.on_event(_event(EventKind.DEVICE_FAILURE, 0, 8, reason=13, source="deadline"))
    assert silent is not None and silent.severity == "warning" and "silent" in silent.message
    assert rules.on_event(_event(EventKind.DEVICE_FAILURE, 0, 9, reason=12)) is None  # shutdown
    # a fleet stopped on purpose (etp demo's end) goes silent without alarming anyone
    assert rules.on_event(_event(EventKind.DEVICE_FAILURE, 0, 10, reason=13, source="deadline",
                                 planned=True)) is None

    rules.on_event(_event(EventKind.DEVICE_OFFLINE, 1_000, 7))
    rules.on_event(_event(EventKind.DEVICE_OFFLINE, 1_000, 8))
    rules.on_event(_event(EventKind.DEVICE_ONLINE, 30_000, 8))  # back before the delay
    assert rules.on_tick(60_000, {}, {}) == []
    (offline,) = rules.on_tick(61_000, {}, {})
    assert offline.kind == "device_offline" and offline.device_id == 7
    assert rules.on_tick(120_000, {}, {}) == []  # once per time offline

    assert rules.on_tick(121_000, {}, {"bad_tag": 3}) == []  # 3 in the last minute: below
    (burst,) = rules.on_tick(130_000, {}, {"bad_tag": 6, "replay": 3})  # 9 in the last minute
    assert burst.kind == "rejected_frames" and burst.detail["by_reason"] == {
        "bad_tag": 6, "replay": 3}
    assert rules.on_tick(135_000, {}, {"bad_tag": 9, "replay": 3}) == []  # same episode
    assert rules.on_tick(300_000, {}, {"bad_tag": 9, "replay": 3}) == []  # quiet: it ends
    (again,) = rules.on_tick(310_000, {}, {"bad_tag": 30, "replay": 3})
    assert again.kind == "rejected_frames"

    failed = rules.on_event(_event(EventKind.SETTLEMENT_CHANGED, 0, None, trade_id=5,
                                   status="failed", error="insufficient escrow"))
    assert failed is not None and failed.dedup_key == "settlement_failed:5"
    assert rules.on_event(_event(EventKind.SETTLEMENT_CHANGED, 0, None, trade_id=5,
                                 status="settled")) is None


async def test_store_counts_repeats_of_an_open_alert_and_keeps_acknowledged_ones(
    tmp_path: Path,
) -> None:
    async with Store(database_url_for(tmp_path)) as store:
        first, new = await store.raise_alert("device_offline", "warning", "device_offline:3",
                                             "battery 3 offline", device_id=3, at_ms=1000)
        again, new_again = await store.raise_alert("device_offline", "warning",
                                                   "device_offline:3", "still offline",
                                                   device_id=3, at_ms=2000)
        assert new and not new_again and again.id == first.id
        assert (again.count, again.raised_ms, again.last_ms, again.message) == (
            2, 1000, 2000, "still offline")
        acked, changed = await store.acknowledge_alert(first.id, 4, "alice", at_ms=3000)
        assert changed and acked.state == "acknowledged"
        assert acked.view()["acknowledged_by"] == {"key_id": 4, "name": "alice"}
        _, changed_again = await store.acknowledge_alert(first.id, 5, "bob")
        assert not changed_again
        fresh, new = await store.raise_alert("device_offline", "warning", "device_offline:3",
                                             "offline again", device_id=3)
        assert new and fresh.id != first.id and await store.count_open_alerts() == 1


async def _call(hub: HubRuntime, key: str, path: str, method: str = "GET") -> tuple[int, Any]:
    return await asyncio.to_thread(get_json, f"{hub.http_url}{path}", key, method=method)


async def test_running_hub_alerts_and_an_operator_acknowledges(tmp_path: Path) -> None:
    settings = hub_settings(
        tmp_path, status_period_ms=300, liveness_factor=3.0, alert_offline_delay_s=0.5,
        alert_check_interval_s=0.1, alert_rejected_frames_per_min=10,
    )
    async with running_hub(settings) as hub:
        assert hub.registry is not None and hub.alerts is not None
        registry, alerts = hub.registry, hub.alerts
        viewer = await api_key(hub, Role.VIEWER)
        operator = await api_key(hub, Role.OPERATOR, name="alice")
        async with sim_fleet(settings, hub.mqtt_url, count=3) as fleet:
            for core in fleet.cores.values():
                core.status_interval_ms = 300
            await wait_for(lambda: len(registry.online()) == 3, 10, "three online")
            host, port = parse_mqtt_url(hub.mqtt_url)
            async with aiomqtt.Client(host, port, identifier="noisy") as noisy:
                for _ in range(15):
                    await noisy.publish(device_topic(settings.site, 1, STATUS), os.urandom(60))
            fleet.mute(3)
            await wait_for(lambda: alerts.open >= 3, 10, "three alerts")
        status, body = await _call(hub, viewer, "/api/v1/alerts?state=open")
        assert status == 200
        by_kind = {item["kind"]: item for item in body["items"]}
        assert set(by_kind) == {"rejected_frames", "device_failure", "device_offline"}, body
        assert by_kind["device_failure"]["device_id"] == 3
        assert by_kind["device_failure"]["severity"] == "warning"  # silent, not a fault
        assert by_kind["device_offline"]["device_id"] == 3
        assert sum(by_kind["rejected_frames"]["detail"]["by_reason"].values()) > 10
        ids = [item["id"] for item in body["items"]]
        assert ids == sorted(ids, reverse=True)  # newest first

        target = by_kind["device_offline"]["id"]
        assert (await _call(hub, viewer, f"/api/v1/alerts/{target}/acknowledge", "POST"))[0] \
            == 403
        status, acked = await _call(hub, operator, f"/api/v1/alerts/{target}/acknowledge",
                                    "POST")
        assert status == 200 and acked["state"] == "acknowledged"
        assert acked["acknowledged_by"]["name"] == "alice-operator"
        assert (await _call(hub, operator, "/api/v1/alerts/999999/acknowledge", "POST"))[0] \
            == 404
        status, still_open = await _call(hub, viewer, "/api/v1/alerts?state=open")
        assert target not in [item["id"] for item in still_open["items"]]
        assert (await _call(hub, viewer, "/api/v1/status"))[1]["alerts"]["open"] == 2
        assert (await _call(hub, viewer, "/api/v1/alerts?state=closed"))[0] == 400

        events = await hub.read_events(0, 1000, ["alert_raised", "alert_acknowledged"])
        raised = [e for e in events if e["kind"] == "alert_raised"]
        assert {e["payload"]["kind"] for e in raised} >= set(by_kind)
        (ack_event,) = [e for e in events if e["kind"] == "alert_acknowledged"]
        assert ack_event["payload"]["id"] == target and ack_event["device_id"] == 3
