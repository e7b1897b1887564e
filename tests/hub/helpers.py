"""Helpers for hub tests: settings on free ports, a running hub, a simulated fleet, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hub.runtime import HubRuntime
from hub.settings import Settings, load_master_secret
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
