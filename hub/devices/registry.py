"""The registry of batteries at a site: who is online, their last state, and failure detection.

A device is online after its birth (Register) or any authenticated frame. It goes offline on a
DeviceFailure (its last will or a self-reported fault) or when nothing was heard from it for
liveness_factor x status period: amqtt does not fire a will on keepalive timeout, so the
deadline is what catches a silent device. Every failure calls `on_failure` synchronously, so
the engine can terminate the device's auctions within the 200 ms DeviceFailure deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from hub.transport.codec import BatteryState, Birth, FailureNotice
from shared_etp.compat import ticks_ms
from shared_etp.schema import (
    HEALTH_FAULT,
    HEALTH_OFFLINE,
    HEALTH_OK,
    REASON_DEVICE_FAULT,
    REASON_LINK_LOST,
)

__all__ = ["Device", "Registry"]

log = structlog.get_logger(__name__)


@dataclass
class Device:
    """Last known state of one battery."""

    device_id: int
    online: bool = False
    health: int = HEALTH_OK
    energy_total_wh: int = 0
    energy_remaining_wh: int = 0
    pct_for_sale: int = 0
    reserve_mc: int = 0
    soc: int = 0
    voltage_mv: int = 0
    discharge_w: int = 0
    last_seen_ticks: int = 0
    last_seen_ms: int = 0
    failures: int = 0

    @property
    def sellable_wh(self) -> int:
        """Energy the battery offers for sale by its own percentage (before holds)."""
        return self.energy_remaining_wh * self.pct_for_sale // 10000

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "device_id": self.device_id,
            "online": self.online,
            "health": self.health,
            "energy_total_wh": self.energy_total_wh,
            "energy_remaining_wh": self.energy_remaining_wh,
            "pct_for_sale": self.pct_for_sale,
            "reserve_mc": self.reserve_mc,
            "soc": self.soc,
            "voltage_mv": self.voltage_mv,
            "failures": self.failures,
            "last_seen_ms": self.last_seen_ms or None,  # when the hub last heard it (None: never)
        }


FailureCallback = Callable[[Device, int, str], None]


class Registry:
    """Tracks devices and detects their loss; `on_failure(device, reason, source)` is called once
    per failure with source "will" (DeviceFailure frame) or "deadline" (silence)."""

    def __init__(
        self,
        status_period_ms: int,
        liveness_factor: float,
        on_failure: FailureCallback,
        on_change: Callable[[Device], None] | None = None,
        clock: Callable[[], int] = ticks_ms,
    ) -> None:
        self.devices: dict[int, Device] = {}
        self.silence_limit_ms = int(status_period_ms * liveness_factor)
        self.on_failure = on_failure
        self.on_change = on_change
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self.expect_departures = False  # set while a fleet is being shut down on purpose

    def get(self, device_id: int) -> Device:
        """The device record, created on first sight."""
        device = self.devices.get(device_id)
        if device is None:
            device = self.devices[device_id] = Device(device_id)
        return device

    def forget(self, device_id: int) -> None:
        """Drop a device without a failure (hub workers: it moved to another worker)."""
        self.devices.pop(device_id, None)

    def online(self) -> list[Device]:
        """Devices currently online and not faulted."""
        return [d for d in self.devices.values() if d.online and d.health < HEALTH_FAULT]

    def seen(self, device_id: int, wall_ms: int) -> Device:
        """Any authenticated frame from the device proves it is alive. A faulted device stays
        out of trading until its own status or birth reports it healthy again: a reply that
        was in flight when it failed must not show it online for a moment."""
        device = self.get(device_id)
        device.last_seen_ticks = self.clock()
        device.last_seen_ms = wall_ms
        if not device.online and device.health < HEALTH_FAULT:
            device.online = True
            if device.health == HEALTH_OFFLINE:
                device.health = HEALTH_OK
            log.info("device online", device=device_id)
            if self.on_change is not None:
                self.on_change(device)
        return device

    def on_register(self, birth: Birth) -> Device:
        """Register (birth): the battery's nameplate and offer."""
        device = self.get(birth.device_id)
        device.health = birth.health
        device = self.seen(birth.device_id, birth.sent_ms)
        device.energy_total_wh = birth.energy_total_wh
        device.pct_for_sale = birth.pct_for_sale
        device.reserve_mc = birth.reserve_mc
        device.energy_remaining_wh = birth.energy_remaining_wh
        device.health = birth.health
        if self.on_change is not None:
            self.on_change(device)
        return device

    def on_stale_birth(self, birth: Birth) -> Device:
        """A retained birth older than the silence limit: its facts, but no proof of life."""
        device = self.get(birth.device_id)
        device.energy_total_wh = birth.energy_total_wh
        device.reserve_mc = birth.reserve_mc
        device.pct_for_sale = birth.pct_for_sale
        device.energy_remaining_wh = birth.energy_remaining_wh
        return device

    def on_state(self, state: BatteryState) -> Device:
        """BESSStatus or QueryResponse: current energy, health and electrical state."""
        device = self.get(state.device_id)
        device.energy_remaining_wh = state.energy_remaining_wh
        for name in ("voltage_mv", "discharge_w", "soc", "pct_for_sale", "energy_total_wh",
                     "reserve_mc"):
            value = getattr(state, name)
            if value is not None:
                setattr(device, name, value)
        if state.health >= HEALTH_FAULT:
            # alive but faulted: not available for trading until it reports healthy again
            device.last_seen_ticks = self.clock()
            device.last_seen_ms = state.sent_ms
            device.health = state.health
            if device.online:
                self.fail(device, REASON_DEVICE_FAULT, "status")
            return device
        device.health = state.health
        return self.seen(state.device_id, state.sent_ms)

    def on_failure_frame(self, notice: FailureNotice) -> Device:
        """DeviceFailure from the device (self-detected) or its last will."""
        device = self.get(notice.device_id)
        device.health = max(notice.health, HEALTH_FAULT)
        self.fail(device, notice.reason, "will")
        return device

    def fail(self, device: Device, reason: int, source: str) -> None:
        """Mark the device offline and notify once (repeated failures while offline are quiet)."""
        if not device.online and device.failures:
            return
        device.online = False
        device.failures += 1
        if device.health < HEALTH_FAULT:
            device.health = HEALTH_OFFLINE
        report = log.info if self.expect_departures else log.warning
        report("device failure", device=device.device_id, reason=reason, source=source)
        self.on_failure(device, reason, source)
        if self.on_change is not None:
            self.on_change(device)

    def sweep(self) -> list[Device]:
        """Fail every online device silent for longer than the liveness limit."""
        now = self.clock()
        lost = [
            d
            for d in self.devices.values()
            if d.online and now - d.last_seen_ticks > self.silence_limit_ms
        ]
        for device in lost:
            self.fail(device, REASON_LINK_LOST, "deadline")
        return lost

    async def start(self, interval_s: float = 0.05) -> None:
        """Run the liveness sweep in the background."""
        self._task = asyncio.create_task(self._sweeper(interval_s), name="registry-sweep")

    async def stop(self) -> None:
        """Stop the sweep."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _sweeper(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("liveness sweep failed")
