"""Hub metrics: per-type request/response latency (p50/p99 and fixed buckets), deadline misses,
rejections."""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from shared_etp.schema import DEADLINE_MS, TYPE_NAMES

__all__ = ["LATENCY_BUCKETS_MS", "LatencyHistogram", "Metrics", "percentile"]

log = structlog.get_logger(__name__)

# Upper bounds (inclusive) of the latency buckets every LatencyHistogram counts, for the
# Prometheus histograms of GET /metrics; a sample over the last bound counts only in +Inf.
LATENCY_BUCKETS_MS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (0..1) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))]


@dataclass
class LatencyHistogram:
    """Latency samples (ms) of one request type: exact recent window plus running totals and
    counts per bucket of LATENCY_BUCKETS_MS since the start (not cumulative: `bucket_counts[i]`
    holds samples in (bound[i-1], bound[i]], the last entry those over every bound)."""

    window: int = 20000
    samples: deque[float] = field(default_factory=deque)
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    bucket_counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_MS) + 1))

    def add(self, latency_ms: float) -> None:
        """Record one observation."""
        self.count += 1
        self.total_ms += latency_ms
        self.max_ms = max(self.max_ms, latency_ms)
        self.bucket_counts[bisect_left(LATENCY_BUCKETS_MS, latency_ms)] += 1
        self.samples.append(latency_ms)
        if len(self.samples) > self.window:
            self.samples.popleft()

    def cumulative_buckets(self) -> list[tuple[float, int]]:
        """(upper bound in ms, samples at or under it) per bucket, then (inf, count)."""
        rows: list[tuple[float, int]] = []
        running = 0
        for bound, in_bucket in zip(LATENCY_BUCKETS_MS, self.bucket_counts, strict=False):
            running += in_bucket
            rows.append((bound, running))
        rows.append((float("inf"), self.count))
        return rows

    def percentile(self, fraction: float) -> float | None:
        """The given percentile (0..1) over the recent window, or None with no samples."""
        return percentile(list(self.samples), fraction) if self.samples else None

    def summary(self) -> dict[str, Any]:
        """count, mean, p50, p99, max in ms."""
        return {
            "count": self.count,
            "mean_ms": round(self.total_ms / self.count, 3) if self.count else None,
            "p50_ms": _round(self.percentile(0.50)),
            "p99_ms": _round(self.percentile(0.99)),
            "max_ms": round(self.max_ms, 3),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Metrics:
    """Everything the hub counts; read by the gateway, the demo line and the benchmark."""

    def __init__(self) -> None:
        self.latency: dict[str, LatencyHistogram] = {}
        self.deadline_misses: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.rejected_frames: Counter[str] = Counter()  # protocol error code -> count
        # told of each rejected frame (reason, topic): the security audit's frames_rejected
        self.on_reject: Callable[[str, str], None] | None = None
        self.bid_rejections: Counter[str] = Counter()  # battery reason name -> count
        self.messages_in: Counter[str] = Counter()  # type name -> count
        self.messages_out: Counter[str] = Counter()
        self.counters: Counter[str] = Counter()
        self._miss_log_budget = 50
        self.loop_lag = LatencyHistogram(window=2000)
        self.store_latency: dict[str, LatencyHistogram] = {}

    def observe_store(self, operation: str, latency_ms: float) -> None:
        """How long the auction path waited for one store write (queueing included)."""
        hist = self.store_latency.get(operation)
        if hist is None:
            hist = self.store_latency[operation] = LatencyHistogram()
        hist.add(latency_ms)

    def observe_loop_lag(self, lag_ms: float) -> None:
        """How late the event loop ran a timer (sampled every 50 ms)."""
        self.loop_lag.add(max(0.0, lag_ms))

    def observe_response(self, request_type: int, latency_ms: float) -> None:
        """A response to a request of request_type arrived after latency_ms."""
        name = TYPE_NAMES[request_type]
        hist = self.latency.get(name)
        if hist is None:
            hist = self.latency[name] = LatencyHistogram()
        hist.add(latency_ms)
        if latency_ms > DEADLINE_MS[request_type]:
            self._miss(name, latency_ms)

    def observe_timeout(self, request_type: int, waited_ms: float) -> None:
        """No response to a request of request_type arrived within its deadline."""
        name = TYPE_NAMES[request_type]
        self.timeouts[name] += 1
        self._miss(name, waited_ms)

    def _miss(self, name: str, latency_ms: float) -> None:
        self.deadline_misses[name] += 1
        if self._miss_log_budget > 0:
            self._miss_log_budget -= 1
            log.warning("deadline missed", request=name, latency_ms=round(latency_ms, 1))

    def reject_frame(self, code: str, topic: str) -> None:
        """A frame from the network failed protocol checks: counted and dropped."""
        self.rejected_frames[code] += 1
        if self.on_reject is not None:
            self.on_reject(code, topic)
        total = sum(self.rejected_frames.values())
        if total <= 20 or total % 1000 == 0:
            log.warning("frame rejected", reason=code, topic=topic, total=total)

    @property
    def total_deadline_misses(self) -> int:
        """All deadline misses across message types."""
        return sum(self.deadline_misses.values())

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready view of every metric."""
        return {
            "latency_ms": {name: hist.summary() for name, hist in sorted(self.latency.items())},
            "deadline_misses": dict(self.deadline_misses),
            "timeouts": dict(self.timeouts),
            "rejected_frames": dict(self.rejected_frames),
            "bid_rejections": dict(self.bid_rejections),
            "messages_in": dict(self.messages_in),
            "messages_out": dict(self.messages_out),
            "counters": dict(self.counters),
            "loop_lag_ms": self.loop_lag.summary(),
            "store_ms": {name: h.summary() for name, h in sorted(self.store_latency.items())},
        }
