"""Hub runtime: health endpoints, status, PostgreSQL store, settings and the master key."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from hub.settings import MasterSecretError, Settings, load_master_secret
from hub.store import Store
from tests.hub.helpers import (
    api_key,
    get_json,
    hub_settings,
    running_hub,
    sim_fleet,
    wait_for,
)
from tests.pg import postgres_missing_reason, postgres_server


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_health_endpoints_follow_broker_and_store(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path)
    async with running_hub(settings) as hub:
        base = hub.http_url
        assert await asyncio.to_thread(_get, base + "/health/live") == (200, {"status": "live"})
        code, body = await asyncio.to_thread(_get, base + "/health/ready")
        assert code == 200 and body["status"] == "ready"
        key = await api_key(hub)
        code, status = await asyncio.to_thread(get_json, base + "/api/v1/status", key)
        assert code == 200 and status["site"] == "site1" and status["ready"] is True
        assert hub.link is not None
        await hub.link.stop()  # broker connection gone -> not ready
        code, body = await asyncio.to_thread(_get, base + "/health/ready")
        assert code == 503 and body["status"] == "not_ready"
        assert (await asyncio.to_thread(_get, base + "/health/live"))[0] == 200


async def test_second_hub_on_a_taken_port_fails_with_a_clear_message(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path / "a")
    async with running_hub(settings):
        clash = hub_settings(tmp_path / "b", mqtt_port=settings.mqtt_port)
        with pytest.raises(Exception, match="in use"):
            async with running_hub(clash):
                pass


def test_settings_read_etp_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETP_SITE", "north")
    monkeypatch.setenv("ETP_MECHANISM", "second_price")
    monkeypatch.setenv("ETP_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.site == "north" and settings.mechanism == "second_price"
    assert settings.resolved_database_url() == f"sqlite+aiosqlite:///{tmp_path.resolve()}/etp.db"
    assert settings.embedded_broker and settings.resolved_mqtt_url() == "mqtt://127.0.0.1:1883"
    monkeypatch.setenv("ETP_MECHANISM", "dutch")
    with pytest.raises(ValueError):
        Settings()


def test_master_secret_created_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    first = load_master_secret(path)
    assert len(first) == 32
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_secret(path) == first
    path.write_text("not hex\n")
    with pytest.raises(MasterSecretError, match="hex"):
        load_master_secret(path)


@pytest.mark.slow
@pytest.mark.postgres
async def test_trading_with_postgresql_store(tmp_path: Path) -> None:
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        settings = hub_settings(tmp_path, database_url=url)
        async with running_hub(settings) as hub:
            async with sim_fleet(settings, hub.mqtt_url, count=4) as fleet:
                assert hub.auctions is not None
                engine = hub.auctions
                await wait_for(lambda: engine.totals.trades >= 5, 30, "5 trades")
                await engine.stop()  # hub stops trading before its batteries go away
            committed = fleet.committed_trades()
        store = Store(url)
        await store.start()
        try:
            trades = {t.auction_id: (t.device_id, t.bidder_id, t.price_mc, t.energy_wh)
                      for t in await store.list_trades()}
            devices = await store.list_devices()
        finally:
            await store.close()
    assert len(trades) >= 5
    assert trades == committed
    assert {d.device_id for d in devices} == {1, 2, 3, 4}


async def test_a_taken_http_port_is_a_clear_error_not_the_end_of_the_process(
    tmp_path: Path,
) -> None:
    """uvicorn exits the process when it cannot bind: the hub turns that into an error its
    caller can handle (a SystemExit out of a task would escape the event loop: in the test
    suite it broke every test after it)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = hub_settings(tmp_path, http_port=port, settlement_network="off")
        with pytest.raises(RuntimeError, match="pick another port with --http-port"):
            async with running_hub(settings):
                pass
    await asyncio.sleep(0)  # the event loop still runs
