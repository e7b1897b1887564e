"""Helpers for hub tests: settings on free ports, a running hub, a simulated fleet, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hub.auth import Role, issue_api_key
from hub.runtime import HubRuntime
from hub.settings import Settings, load_master_secret
from hub.store import Store
from hub.tools.sim import SimConfig, SimFleet
from tests.brokers import free_port


def hub_settings(data_dir: Path, mqtt_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test hub: temp data dir, free ports, quick cadence."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "mqtt_url": mqtt_url,
        "mqtt_port": free_port(),
        "http_port": free_port(),
        "auction_interval_ms": 300,
        "notice_interval_ms": 500,
        "log_level": "warning",
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running_hub(settings: Settings, **kwargs: Any) -> AsyncIterator[HubRuntime]:
    """A started HubRuntime, stopped on exit."""
    runtime = HubRuntime(settings, **kwargs)
    try:
        await runtime.start()
        yield runtime
    finally:
        await runtime.stop()


@contextlib.asynccontextmanager
async def sim_fleet(settings: Settings, mqtt_url: str, count: int = 6, **kwargs: Any
                    ) -> AsyncIterator[SimFleet]:
    """Simulated batteries (the firmware core on CPython) for the hub's site and master key."""
    master = load_master_secret(settings.master_secret_path())
    overrides = {"delivery_s": 36000, **kwargs.pop("overrides", {})}
    fleet = SimFleet(SimConfig(mqtt_url=mqtt_url, site=settings.site, master_secret=master,
                               count=count, overrides=overrides, **kwargs))
    try:
        await fleet.start()
        yield fleet
    finally:
        await fleet.stop()


async def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll predicate until true; fail with `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def api_key(hub: HubRuntime, role: Role = Role.VIEWER, name: str = "test") -> str:
    """A new API key of the running hub (made through its store, as `etp apikey` does)."""
    return (await hub.api_keys.create(f"{name}-{role.value}", role)).key


def make_api_key(database_url: str, role: Role = Role.VIEWER, name: str = "test") -> str:
    """A new API key in a hub's database from synchronous code (a hub in another process);
    migrates the database first if it is new."""

    async def make() -> str:
        async with Store(database_url) as store:
            return (await issue_api_key(store, f"{name}-{role.value}", role)).key

    with ThreadPoolExecutor(1) as pool:  # callers may be inside a running event loop
        return pool.submit(lambda: asyncio.run(make())).result()


def get_json(
    url: str, key: str | None = None, *, method: str = "GET", header: str = "bearer",
    body: Any = None, timeout: float = 5.0,
) -> tuple[int, Any]:
    """(status, JSON body) of one request, with the key as a bearer token or in X-API-Key."""
    headers = {}
    if key is not None:
        if header == "bearer":
            headers["Authorization"] = f"Bearer {key}"
        else:
            headers["X-API-Key"] = key
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
