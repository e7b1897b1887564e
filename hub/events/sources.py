"""Events the hub derives from what it observes: battery status changes, metrics snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import structlog

from hub.devices import Device
from hub.events.kinds import EventKind
from hub.events.log import EventLog

__all__ = ["BatteryStatusChanges", "emit_metrics_snapshots"]

log = structlog.get_logger(__name__)


class BatteryStatusChanges:
    """Decides which BESSStatus messages become battery_status events: only those that change
    the battery's (online, health code, state-of-charge step). With 3,000 batteries reporting
    every 5 s this costs one tuple and one dict lookup per message (600/s), and yields a few
    events per battery per hour while it charges or discharges, not 600 per second."""

    def __init__(self, soc_step_pct: int) -> None:
        if not 1 <= soc_step_pct <= 100:
            raise ValueError(f"soc_step_pct must be 1..100, not {soc_step_pct}")
        self._step = soc_step_pct * 100  # soc is in hundredths of a percent
        self._last: dict[int, tuple[bool, int, int]] = {}

    def payload(self, device: Device) -> dict[str, Any] | None:
        """The battery_status payload if `device` changed since its last event, else None."""
        state = (device.online, device.health, device.soc // self._step)
        if self._last.get(device.device_id) == state:
            return None
        self._last[device.device_id] = state
        return {
            "online": device.online,
            "health": device.health,
            "soc": device.soc,
            "energy_remaining_wh": device.energy_remaining_wh,
            "voltage_mv": device.voltage_mv,
        }


async def emit_metrics_snapshots(
    events: EventLog, interval_s: float, snapshot: Callable[[], dict[str, Any]]
) -> None:
    """Emit a metrics_snapshot event with `snapshot()` every `interval_s` until cancelled."""
    while True:
        await asyncio.sleep(interval_s)
        if not events.started:
            continue
        try:
            events.emit(EventKind.METRICS_SNAPSHOT, **snapshot())
        except ValueError as exc:  # a value that is not JSON: a bug to see, not to die of
            log.error("metrics snapshot refused by the event log", error=str(exc))
