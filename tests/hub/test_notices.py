"""The hub's market notices: each battery gets its own, signed with its own notice key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiomqtt
import pytest

from hub.settings import load_master_secret
from hub.transport.broker import parse_mqtt_url
from shared_etp.errors import ProtocolError
from shared_etp.frame import (
    NOTICE_CLEARING,
    NOTICE_REPUTATION,
    Keyring,
    decode_notice,
    derive_notice_key,
)
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for

pytestmark = pytest.mark.slow


def _board_keyring(master: bytes, device_id: int) -> Keyring:
    """What board `device_id` verifies notices with: its own notice key, the hub as sender."""
    ring = Keyring()
    ring.add(device_id, derive_notice_key(master, device_id), owner=0)
    return ring


@pytest.mark.parametrize("connections", [2, 1], ids=["own_connections", "shared_connection"])
async def test_each_battery_gets_only_its_own_verifiable_notices(
    tmp_path: Path, connections: int
) -> None:
    settings = hub_settings(tmp_path, notice_interval_ms=300)
    seen: dict[str, bytes] = {}  # topic -> latest notice, as anyone subscribed to market/#
    async with running_hub(settings) as hub:
        master = load_master_secret(settings.master_secret_path())
        host, port = parse_mqtt_url(hub.mqtt_url)
        async with aiomqtt.Client(host, port, identifier="notice-watcher") as watcher:
            await watcher.subscribe(f"etp/v1/{settings.site}/market/#", qos=1)

            async def collect() -> None:
                async for message in watcher.messages:
                    seen[str(message.topic)] = bytes(message.payload)  # type: ignore[arg-type]

            collector = asyncio.create_task(collect())
            try:
                async with sim_fleet(
                    settings, hub.mqtt_url, count=2, connections=connections
                ) as fleet:
                    cores = fleet.cores
                    await wait_for(
                        lambda: all(core.stats["notices"] >= 4 for core in cores.values()),
                        20,
                        "both batteries taking several rounds of notices",
                    )
                    errors = {
                        dev: dict(core.stats["protocol_errors"]) for dev, core in cores.items()
                    }
                    dropped = {dev: dict(core.stats["dropped"]) for dev, core in cores.items()}
                    reputation = {
                        dev: dict(core.evaluator.hub_reputation) for dev, core in cores.items()
                    }
                # a battery that (re)connects gets its latest notice at once: it is retained
                async with aiomqtt.Client(host, port, identifier="late-board") as late:
                    await late.subscribe(f"etp/v1/{settings.site}/market/1/reputation", qos=1)
                    async with asyncio.timeout(5):
                        message = await anext(late.messages)
                    retained_late = message.retain
                    decode_notice(bytes(message.payload), _board_keyring(master, 1))  # type: ignore[arg-type]
            finally:
                collector.cancel()
    # each battery verified every notice it was sent (no refusal, nothing for another board)
    assert errors == {1: {}, 2: {}}, errors
    assert dropped == {1: {}, 2: {}}, dropped
    assert reputation[1] and reputation[1] == reputation[2]  # the same market, signed twice
    assert retained_late, "a battery (re)connecting gets its latest notice at once"
    site = settings.site
    # market/hub is the hub's online flag; the first version's site-wide notices are deleted
    # (an empty retained message), never published
    assert all(
        not seen[f"etp/v1/{site}/market/{leaf}"]
        for leaf in ("reputation", "clearing")
        if f"etp/v1/{site}/market/{leaf}" in seen
    )
    notices = {t: f for t, f in seen.items() if f and t != f"etp/v1/{site}/market/hub"}
    assert set(notices) == {
        f"etp/v1/{site}/market/{dev}/{leaf}"
        for dev in (1, 2)
        for leaf in ("reputation", "clearing")
    }, sorted(seen)  # per board only: no site-wide notice any more
    rings = {dev: _board_keyring(master, dev) for dev in (1, 2)}
    for topic, frame in notices.items():
        owner = int(topic.split("/")[4])
        kind, _, _ = decode_notice(frame, rings[owner])
        assert kind == (NOTICE_REPUTATION if topic.endswith("reputation") else NOTICE_CLEARING)
        other = rings[3 - owner]
        with pytest.raises(ProtocolError) as refused:
            decode_notice(frame, other)  # the other board cannot take it for its own
        assert refused.value.code == "unknown_key"
