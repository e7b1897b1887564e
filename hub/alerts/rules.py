"""When to alert an operator: pure rules over the hub's events and counters (no I/O).

- device_failure: a battery reports a fault (DeviceFailure): critical; or goes silent past its
  status deadline: warning;
- device_offline: a battery stays offline longer than `offline_delay_ms`: warning;
- device_quarantined: a battery flooded the hub and is quarantined (hub.devices.flood):
  critical;
- deadline_misses: more than `deadline_misses_per_min` responses missed their deadline in the
  last minute: warning;
- rejected_frames: more than `rejected_frames_per_min` frames failed protocol checks in the
  last minute: warning;
- settlement_failed: a trade's settlement gave up: critical;
- trade_unresolvable: a battery's answer cannot decide a trade: critical.

A battery that shuts down on purpose (reason `shutdown`) is not a failure; if it stays away it
becomes an offline alert. Rate alerts fire once per episode: again only after the rate fell
below the threshold. Each alert has a dedup key (kind and subject): the store counts repeats
of an open alert instead of adding rows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hub.events import Event, EventKind
from shared_etp.names import REASON_NAMES

__all__ = ["AlertRules", "AlertSpec"]

_SHUTDOWN, _LINK_LOST = 12, 13
WINDOW_MS = 60_000


@dataclass(frozen=True)
class AlertSpec:
    """An alert to raise (or to count again while it is open)."""

    kind: str
    severity: str
    dedup_key: str
    message: str
    device_id: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class _Rate:
    """A counter's increase over the last minute, firing once per episode above `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        # (time, counts): the counts are since the hub started, so they were zero before
        self.samples: deque[tuple[int, dict[str, int]]] = deque([(0, {})])
        self.firing = False

    def crossed(self, now_ms: int, counts: Mapping[str, int]) -> dict[str, int] | None:
        """The per-label increase over the window when it just went above the limit."""
        self.samples.append((now_ms, dict(counts)))
        while len(self.samples) > 1 and self.samples[1][0] <= now_ms - WINDOW_MS:
            self.samples.popleft()
        base = self.samples[0][1]
        increase = {k: v - base.get(k, 0) for k, v in counts.items() if v > base.get(k, 0)}
        above = self.limit > 0 and sum(increase.values()) > self.limit
        crossed = above and not self.firing
        self.firing = above
        return increase if crossed else None


class AlertRules:
    """Feed it every event (`on_event`) and a tick now and then (`on_tick`); it says which
    alerts to raise."""

    def __init__(
        self, offline_delay_ms: int, deadline_misses_per_min: int, rejected_frames_per_min: int
    ) -> None:
        self.offline_delay_ms = offline_delay_ms
        self._offline_since: dict[int, int] = {}
        self._offline_alerted: set[int] = set()
        self._misses = _Rate(deadline_misses_per_min)
        self._rejected = _Rate(rejected_frames_per_min)

    def on_event(self, event: Event) -> AlertSpec | None:
        """The alert an event raises at once, if any (and it notes who is offline)."""
        kind, device, payload = event.kind, event.device_id, event.payload
        if kind == EventKind.DEVICE_OFFLINE and device is not None:
            self._offline_since.setdefault(device, event.ts_ms)
        elif kind == EventKind.DEVICE_ONLINE and device is not None:
            self._offline_since.pop(device, None)
            self._offline_alerted.discard(device)
        elif kind == EventKind.DEVICE_FAILURE and device is not None:
            return self._failure(device, payload)
        elif kind == EventKind.DEVICE_QUARANTINED and device is not None:
            return AlertSpec(
                "device_quarantined", "critical", f"device_quarantined:{device}",
                f"battery {device} flooded the hub ({payload.get('dropped')} frames dropped "
                f"in 10 s): quarantined for {payload.get('quarantine_s')} s, no auctions",
                device, dict(payload),
            )
        elif kind == EventKind.SETTLEMENT_CHANGED and payload.get("status") == "failed":
            trade = payload.get("trade_id")
            return AlertSpec(
                "settlement_failed", "critical", f"settlement_failed:{trade}",
                f"settlement of trade {trade} failed: {payload.get('error') or 'no reason given'}",
                device, {"trade_id": trade, "error": payload.get("error")},
            )
        elif kind == EventKind.TRADE_UNRESOLVABLE:
            trade = payload.get("trade_id")
            return AlertSpec(
                "trade_unresolvable", "critical", f"trade_unresolvable:{trade}",
                f"battery {device}'s answer cannot decide trade {trade} of auction "
                f"{event.auction_id}: {payload.get('problem')}",
                device, {"trade_id": trade, "auction_id": event.auction_id, **payload},
            )
        return None

    def _failure(self, device: int, payload: Mapping[str, Any]) -> AlertSpec | None:
        reason = payload.get("reason")
        if reason == _SHUTDOWN or payload.get("planned"):
            return None
        name = REASON_NAMES.get(reason, str(reason)) if isinstance(reason, int) else str(reason)
        silent = reason == _LINK_LOST or payload.get("source") == "deadline"
        revoked = payload.get("source") == "revoked"  # `etp device revoke`: on purpose
        message = (
            f"battery {device} went silent past its status deadline"
            if silent
            else f"battery {device} was revoked: its frames are refused"
            if revoked
            else f"battery {device} reported a fault: {name}"
        )
        return AlertSpec(
            "device_failure", "warning" if silent or revoked else "critical",
            f"device_failure:{device}:{name}", message, device,
            {"reason": reason, "reason_name": name, "source": payload.get("source"),
             "health": payload.get("health")},
        )

    def on_tick(
        self, now_ms: int, deadline_misses: Mapping[str, int],
        rejected_frames: Mapping[str, int],
    ) -> list[AlertSpec]:
        """Alerts due now: batteries offline too long, rates that just crossed their limit.
        `deadline_misses` and `rejected_frames` are counts since the start, by label."""
        due: list[AlertSpec] = []
        for device, since in self._offline_since.items():
            if device not in self._offline_alerted and now_ms - since >= self.offline_delay_ms:
                self._offline_alerted.add(device)
                minutes = (now_ms - since) / 60_000
                due.append(AlertSpec(
                    "device_offline", "warning", f"device_offline:{device}",
                    f"battery {device} offline for {minutes:.1f} min", device,
                    {"offline_since_ms": since},
                ))
        misses = self._misses.crossed(now_ms, deadline_misses)
        if misses is not None:
            due.append(AlertSpec(
                "deadline_misses", "warning", "deadline_misses",
                f"{sum(misses.values())} deadline misses in the last minute "
                f"(limit {self._misses.limit})", None, {"by_type": misses},
            ))
        rejected = self._rejected.crossed(now_ms, rejected_frames)
        if rejected is not None:
            due.append(AlertSpec(
                "rejected_frames", "warning", "rejected_frames",
                f"{sum(rejected.values())} frames rejected in the last minute "
                f"(limit {self._rejected.limit})", None, {"by_reason": rejected},
            ))
        return due
