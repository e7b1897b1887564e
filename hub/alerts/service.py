"""`Alerts`: runs the rules (hub.alerts.rules) in the hub, stores what they raise and puts it
in the event log (`alert_raised`, `alert_acknowledged`) for the dashboard and the API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import structlog

from hub.alerts.rules import AlertRules, AlertSpec
from hub.events import EventKind, EventLog, Lagged
from hub.store import AlertRow, Store
from shared_etp.compat import now_ms

__all__ = ["Alerts"]

log = structlog.get_logger("hub.alerts")

_WATCHED = (
    EventKind.DEVICE_ONLINE, EventKind.DEVICE_OFFLINE, EventKind.DEVICE_FAILURE,
    EventKind.DEVICE_QUARANTINED,
    EventKind.SETTLEMENT_CHANGED, EventKind.TRADE_UNRESOLVABLE,
)


class Alerts:
    """Follows the event log and ticks every `check_interval_s`; each alert raised is a row
    in the store (repeats of an open one counted) and an `alert_raised` event."""

    def __init__(
        self,
        store: Store,
        events: EventLog,
        rules: AlertRules,
        counters: Callable[[], tuple[Mapping[str, int], Mapping[str, int]]],
        *,
        check_interval_s: float = 5.0,
    ) -> None:
        self._store = store
        self._events = events
        self._rules = rules
        self._counters = counters  # (deadline misses, rejected frames) by label, since start
        self._interval_s = check_interval_s
        self._tasks: list[asyncio.Task[None]] = []
        self.open = 0
        self.raised = 0
        self.failed = 0

    async def start(self) -> None:
        """Count the open alerts, then follow the log and tick in the background."""
        self.open = await self._store.count_open_alerts()
        subscription = self._events.subscribe(_WATCHED)
        self._tasks = [
            asyncio.create_task(self._follow(subscription), name="alerts-follow"),
            asyncio.create_task(self._tick(), name="alerts-tick"),
        ]

    async def stop(self) -> None:
        """Stop following and ticking (alerts being written are finished or dropped)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def summary(self) -> dict[str, int]:
        """For /api/v1/status: open alerts, raised since the start, failed writes."""
        return {"open": self.open, "raised": self.raised, "write_errors": self.failed}

    async def acknowledge(self, alert_id: int, key_id: int, name: str) -> AlertRow:
        """An operator saw it: stored with who and when, and an `alert_acknowledged` event
        (once: acknowledging again changes nothing). UnknownAlertError if no such alert."""
        row, changed = await self._store.acknowledge_alert(alert_id, key_id, name)
        if changed:
            self.open = max(0, self.open - 1)
            self._emit(EventKind.ALERT_ACKNOWLEDGED, row)
        return row

    async def _follow(self, subscription: Any) -> None:
        with subscription:
            async for item in subscription:
                events = (
                    await self._events.catch_up(subscription, item)
                    if isinstance(item, Lagged)
                    else [item]
                )
                for event in events:
                    spec = self._rules.on_event(event)
                    if spec is not None:
                        await self._raise(spec)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            misses, rejected = self._counters()
            for spec in self._rules.on_tick(now_ms(), misses, rejected):
                await self._raise(spec)

    async def _raise(self, spec: AlertSpec) -> None:
        try:
            row, new = await self._store.raise_alert(
                spec.kind, spec.severity, spec.dedup_key, spec.message[:256],
                device_id=spec.device_id, detail=spec.detail,
            )
        except Exception as exc:  # the store is down: logged and counted, the hub goes on
            self.failed += 1
            log.error("could not store an alert", kind=spec.kind, message=spec.message,
                      error=str(exc))
            return
        self.raised += 1
        if new:
            self.open += 1
            log.warning("alert", kind=spec.kind, device=spec.device_id, message=spec.message)
        self._emit(EventKind.ALERT_RAISED, row)

    def _emit(self, kind: EventKind, row: AlertRow) -> None:
        """The event's payload is the alert's view; its device_id is the event's own."""
        if self._events.started:
            payload = row.view()
            del payload["device_id"]
            self._events.emit(kind, device_id=row.device_id, **payload)
