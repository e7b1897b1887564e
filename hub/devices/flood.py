"""Flood protection at the hub's door: every frame from the broker passes `FrameGate.admit`
before it is queued, so a flooding client costs a dict lookup per frame, not an HMAC check,
and cannot crowd the trade path of well-behaved batteries out of the bounded intake.

- A frame longer than the protocol's maximum (512 bytes) is dropped: `oversized`.
- Each battery (by the device id of its topic) has a token bucket per class of frame:
  `status` (periodic state), `response` (answers to the hub's requests), `life` (birth and
  death). Over its rate, frames are dropped: `rate_limited`.
- A battery whose frames are dropped more than `quarantine_after` times within 10 s is
  quarantined for `quarantine_s`: all its frames are dropped (`quarantined`), no auction opens
  for it, `on_quarantine(device_id, until_ms, dropped)` tells the hub (an event, an alert).
  It is let back in when the time is up; flooding again quarantines it again.

Rejections are counted in the hub's rejected frames by reason (pure logic otherwise: the clock
is passed in).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shared_etp.schema import MAX_FRAME_BYTES
from shared_etp.topics import BIRTH, DEATH, RESPONSE, STATUS, parse_device_topic

__all__ = ["FloodLimits", "FrameGate"]

_CLASS = {STATUS: "status", RESPONSE: "response", BIRTH: "life", DEATH: "life"}
_WINDOW_MS = 10_000


@dataclass(frozen=True)
class FloodLimits:
    """Frames per second and burst per battery and class; when to quarantine, for how long."""

    status_per_s: float = 20.0
    response_per_s: float = 200.0
    life_per_s: float = 2.0
    burst_s: float = 2.0  # a bucket holds this many seconds of its rate (at least 5 frames)
    quarantine_after: int = 500  # drops within 10 s
    quarantine_s: float = 60.0

    def rate(self, frame_class: str) -> float:
        """Frames per second allowed for a class."""
        return {"status": self.status_per_s, "response": self.response_per_s,
                "life": self.life_per_s}[frame_class]


class _Bucket:
    __slots__ = ("stamp_ms", "tokens")

    def __init__(self, tokens: float, stamp_ms: int) -> None:
        self.tokens = tokens
        self.stamp_ms = stamp_ms


class FrameGate:
    """Decides, per received frame, whether the hub looks at it at all."""

    def __init__(
        self,
        limits: FloodLimits,
        clock: Callable[[], int],
        reject: Callable[[str, str], None],
        on_quarantine: Callable[[int, int, int], None],
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._reject = reject  # (reason, topic): counted with the hub's rejected frames
        self._on_quarantine = on_quarantine
        self._buckets: dict[tuple[int, str], _Bucket] = {}
        self._drops: dict[int, tuple[int, int]] = {}  # device -> (window start ms, drops)
        self.quarantined: dict[int, int] = {}  # device -> until ms
        self.quarantines = 0

    def admit(self, topic: str, payload: bytes) -> bool:
        """True if the frame may be queued for the hub; else it was counted and dropped."""
        if len(payload) > MAX_FRAME_BYTES:
            self._reject("oversized", topic)
            return False
        parsed = parse_device_topic(topic)
        if parsed is None:
            return True  # not a device topic: the hub's handler counts it (bad_topic)
        device_id, leaf = parsed[1], parsed[2]
        now = self._clock()
        until = self.quarantined.get(device_id)
        if until is not None:
            if now < until:
                self._reject("quarantined", topic)
                return False
            del self.quarantined[device_id]
        frame_class = _CLASS.get(leaf, "life")
        rate = self.limits.rate(frame_class)
        capacity = max(5.0, rate * self.limits.burst_s)
        bucket = self._buckets.get((device_id, frame_class))
        if bucket is None:
            bucket = self._buckets[(device_id, frame_class)] = _Bucket(capacity, now)
        else:
            bucket.tokens = min(capacity, bucket.tokens + (now - bucket.stamp_ms) * rate / 1000)
            bucket.stamp_ms = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        self._reject("rate_limited", topic)
        self._dropped(device_id, now)
        return False

    def in_quarantine(self, device_id: int, now_ms: int) -> bool:
        """True while the battery is quarantined (the scheduler opens no auction for it)."""
        until = self.quarantined.get(device_id)
        return until is not None and now_ms < until

    def _dropped(self, device_id: int, now: int) -> None:
        start, drops = self._drops.get(device_id, (now, 0))
        if now - start > _WINDOW_MS:
            start, drops = now, 0
        drops += 1
        self._drops[device_id] = (start, drops)
        if drops > self.limits.quarantine_after:
            until = now + round(self.limits.quarantine_s * 1000)
            self.quarantined[device_id] = until
            self.quarantines += 1
            del self._drops[device_id]
            self._on_quarantine(device_id, until, drops)
