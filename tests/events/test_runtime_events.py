"""The running hub's own events: devices online/offline/failure, battery status, metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from hub.events import Event, EventKind
from hub.settings import load_master_secret
from hub.store import Store
from hub.tools.sim.fleet import SimConfig, SimFleet
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, wait_for


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


WATCHED = [
    EventKind.DEVICE_ONLINE,
    EventKind.DEVICE_OFFLINE,
    EventKind.DEVICE_FAILURE,
    EventKind.BATTERY_STATUS,
    EventKind.METRICS_SNAPSHOT,
]


@pytest.mark.slow
async def test_the_hub_logs_device_lifecycle_battery_changes_and_metrics(tmp_path: Path):
    settings = hub_settings(
        tmp_path, status_period_ms=200, liveness_factor=3.0, metrics_snapshot_interval_s=0.3
    )
    received: list[Event] = []
    async with running_hub(settings) as hub:
        assert hub.events is not None
        subscription = hub.events.subscribe(WATCHED)

        async def collect() -> None:
            async for item in subscription:
                if isinstance(item, Event):
                    received.append(item)

        collector = asyncio.create_task(collect())
        fleet = SimFleet(
            SimConfig(
                mqtt_url=hub.mqtt_url,
                site=settings.site,
                master_secret=load_master_secret(settings.master_secret_path()),
                count=3,
                overrides={"delivery_s": 36000, "status_interval_ms": 200},
            )
        )
        await fleet.start()
        try:
            statuses = hub.metrics.messages_in
            await wait_for(lambda: statuses["bess_status"] >= 15, 30, "5 statuses per battery")
            await wait_for(
                lambda: any(e.kind is EventKind.METRICS_SNAPSHOT for e in received), 10, "snapshot"
            )
        finally:
            await fleet.stop()
        await wait_for(  # silent for longer than 3 status periods: lost by deadline
            lambda: sum(e.kind is EventKind.DEVICE_FAILURE for e in received) >= 3, 10, "failures"
        )
        status_messages = statuses["bess_status"]
        first = received[0].seq
        key = await api_key(hub)
        code, body = await asyncio.to_thread(
            get_json,
            f"{hub.http_url}/api/v1/events?after_seq={first}&kind=device_failure&limit=2",
            key,
        )
        assert code == 200
        assert [(e["kind"], e["seq"] > first) for e in body] == [("device_failure", True)] * 2
        assert (await asyncio.to_thread(get_json, f"{hub.http_url}/api/v1/events?limit=0", key))[
            0
        ] == 400
    await asyncio.wait_for(collector, 5)  # the log's stop ends the subscription

    kinds = Counter(event.kind for event in received)
    assert kinds[EventKind.DEVICE_ONLINE] >= 3
    assert kinds[EventKind.DEVICE_OFFLINE] >= 3
    failures = [e for e in received if e.kind is EventKind.DEVICE_FAILURE]
    assert {e.device_id for e in failures} == {1, 2, 3}
    assert {e.payload["source"] for e in failures} == {"deadline"}
    # battery_status only on a change of (online, health, 10 % charge step), not per message
    battery = [e for e in received if e.kind is EventKind.BATTERY_STATUS]
    assert {e.device_id for e in battery} == {1, 2, 3}
    assert len(battery) < status_messages
    for device_id in (1, 2, 3):
        states = [
            (e.payload["online"], e.payload["health"], e.payload["soc"] // 1000)
            for e in battery
            if e.device_id == device_id
        ]
        assert all(before != after for before, after in itertools.pairwise(states)), states
    snapshot = next(e for e in received if e.kind is EventKind.METRICS_SNAPSHOT)
    assert snapshot.payload["devices"]["known"] >= 1 and "store" in snapshot.payload
    assert [e.seq for e in received] == sorted({e.seq for e in received})

    async with Store(settings.resolved_database_url()) as store:
        stored = await store.list_events(kinds=[str(kind) for kind in WATCHED], limit=10_000)
    # Everything published was stored under the same seq. (Until the auction driver emits
    # through the log, its own store.record_event("device_failure") rows are stored too.)
    assert {(e.seq, str(e.kind)) for e in received} <= {(e.seq, e.kind) for e in stored}
