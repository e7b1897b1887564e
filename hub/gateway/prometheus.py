"""GET /metrics: the hub's business and health figures in the Prometheus text exposition
format, version 0.0.4 (rendered here; prometheus_client is not a dependency)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from litestar import Response, get
from litestar.handlers import HTTPRouteHandler
from litestar.types import Guard

from hub.events import EventLog
from hub.gateway.auth import SECURITY
from hub.metrics import LatencyHistogram, Metrics
from hub.store import Store

__all__ = ["CONTENT_TYPE", "Exposition", "MetricsSource", "metrics_handler", "render_metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = Mapping[str, str]


class MetricsSource(Protocol):
    """What /metrics reads from the running hub."""

    def status(self) -> dict[str, Any]:
        """As /api/v1/status: devices, market, metrics snapshot, http and ws blocks."""

    @property
    def metrics(self) -> Metrics:
        """Latency histograms (with buckets) and counters."""

    @property
    def store(self) -> Store | None:
        """The store (queued writes, written and dropped rows)."""

    @property
    def events(self) -> EventLog | None:
        """The event log (last seq issued)."""


def escape_label_value(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and line feed
    escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers without a decimal point, +Inf/-Inf/NaN spelled as the format
    wants."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _label_text(labels: Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{name}="{escape_label_value(str(v))}"' for name, v in labels.items())
    return "{" + inner + "}"


class Exposition:
    """Builds one exposition: each family's HELP and TYPE once, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def _family(self, name: str, kind: str, help_text: str) -> None:
        self._lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self._lines.append(f"# TYPE {name} {kind}")

    def _sample(self, name: str, labels: Labels, value: float) -> None:
        self._lines.append(f"{name}{_label_text(labels)} {format_value(value)}")

    def counter(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels, float | None]]
    ) -> None:
        """A counter family; `name` ends in `_total`; a None value is left out."""
        if not name.endswith("_total"):
            raise ValueError(f"counter {name!r} must end in _total")
        self._family(name, "counter", help_text)
        for labels, value in samples:
            if value is not None:
                self._sample(name, labels, value)

    def gauge(
        self, name: str, help_text: str, samples: Iterable[tuple[Labels, float | None]]
    ) -> None:
        """A gauge family; a None value (not known now) is left out."""
        self._family(name, "gauge", help_text)
        for labels, value in samples:
            if value is not None:
                self._sample(name, labels, value)

    def histogram(
        self,
        name: str,
        help_text: str,
        histograms: Iterable[tuple[Labels, LatencyHistogram]],
    ) -> None:
        """A histogram family in seconds from millisecond LatencyHistograms: cumulative
        `_bucket{le=...}` (ending with +Inf = `_count`), `_sum`, `_count`."""
        self._family(name, "histogram", help_text)
        for labels, hist in histograms:
            for bound_ms, cumulative in hist.cumulative_buckets():
                le = "+Inf" if math.isinf(bound_ms) else format_value(bound_ms / 1000)
                self._sample(f"{name}_bucket", {**labels, "le": le}, cumulative)
            self._sample(f"{name}_sum", labels, hist.total_ms / 1000)
            self._sample(f"{name}_count", labels, hist.count)

    def text(self) -> str:
        """The exposition, line-feed terminated."""
        return "\n".join(self._lines) + "\n"


def _by(label: str, counts: Mapping[str, int]) -> list[tuple[Labels, float | None]]:
    return [({label: str(key)}, value) for key, value in sorted(counts.items())]


def _one(value: float | None) -> list[tuple[Labels, float | None]]:
    return [({}, value)]


def _seconds(value_ms: float | None) -> float | None:
    return None if value_ms is None else value_ms / 1000


def render_metrics(source: MetricsSource) -> str:
    """Every family of /metrics, read from the hub now (families are always present; a
    labelled one has no samples until something is counted)."""
    status = source.status()
    metrics = source.metrics
    market: dict[str, Any] = status.get("market") or {}
    out = Exposition()

    out.gauge("etp_ready", "1 when the MQTT broker is connected and the store started, else 0.",
              _one(1 if status.get("ready") else 0))
    out.gauge("etp_uptime_seconds", "Seconds since the hub started.",
              _one(status.get("uptime_s")))

    # market (since the hub started)
    out.counter("etp_auctions_opened_total", "Auctions opened.",
                _one(market.get("auctions_opened", 0)))
    out.counter("etp_auctions_total", "Auctions ended, by outcome (cleared counts a trade "
                "recorded, verified or not; terminated counts void ones).",
                [({"outcome": outcome}, market.get(f"auctions_{outcome}", 0))
                 for outcome in ("cleared", "no_sale", "terminated")])
    out.gauge("etp_auctions_open", "Auctions running now.", _one(market.get("auctions_open", 0)))
    out.counter("etp_trades_total", "Verified trades: the battery acknowledged the confirm or "
                "said so when asked.", _one(market.get("trades", 0)))
    out.counter("etp_trades_void_total", "Trades void: the battery denied or never saw them.",
                _one(market.get("trades_voided", 0)))
    out.gauge("etp_trades_unverified", "Trades recorded whose battery's word is still awaited "
              "(they do not count as trades yet).", _one(market.get("trades_unverified", 0)))
    out.gauge("etp_trades_unresolvable", "Unverified trades the battery's answer cannot "
              "decide (an operator must look).", _one(market.get("trades_unresolvable", 0)))
    out.counter("etp_revenue_millicents_total", "Paid to battery owners for verified trades, "
                "in milli-cents.", _one(market.get("revenue_mc", 0)))
    out.gauge("etp_clearing_price_last_millicents_per_kwh", "Clearing price of the last sale.",
              _one(market.get("last_clearing_mc")))
    out.gauge("etp_clearing_price_median_millicents_per_kwh", "Median clearing price of the "
              "recent sales (the buyers' window, 20 auctions).",
              _one(market.get("median_clearing_mc")))
    out.gauge("etp_premium_over_reserve_mean_percent", "Mean of (price - reserve) / reserve "
              "over verified trades, in percent.", _one(market.get("mean_premium_pct")))
    aggregators = market.get("aggregators") or []
    out.counter("etp_aggregator_wins_total", "Auctions won, by aggregator.",
                [({"aggregator_id": str(a["id"]), "name": a["name"]}, a["wins"])
                 for a in aggregators])
    out.counter("etp_aggregator_spent_millicents_total", "Spent by each aggregator.",
                [({"aggregator_id": str(a["id"]), "name": a["name"]}, a["spent_mc"])
                 for a in aggregators])
    out.counter("etp_aggregator_energy_bought_wh_total", "Energy bought by each aggregator.",
                [({"aggregator_id": str(a["id"]), "name": a["name"]}, a["energy_bought_wh"])
                 for a in aggregators])

    # batteries
    devices = status.get("devices") or {}
    out.gauge("etp_batteries_known", "Batteries the hub has heard of.",
              _one(devices.get("known", 0)))
    out.gauge("etp_batteries_online", "Batteries online (absent while the broker is out of "
              "reach: not known then).", _one(devices.get("online")))

    alerts = status.get("alerts") or {}
    out.gauge("etp_alerts_open", "Alerts waiting for an operator's acknowledgement.",
              _one(alerts.get("open", 0)))
    out.counter("etp_alerts_raised_total", "Alerts raised or repeated since the hub started.",
                _one(alerts.get("raised", 0)))

    # protocol timing and rejections
    out.histogram("etp_request_latency_seconds", "Request to response time on the battery "
                  "protocol, by request type.",
                  [({"type": name}, hist) for name, hist in sorted(metrics.latency.items())])
    # a request type once seen has a 0 series for misses (rate() needs the series to exist)
    request_types = set(metrics.latency) | set(metrics.deadline_misses) | set(metrics.timeouts)
    out.counter("etp_deadline_misses_total", "Responses late or missing, by request type.",
                _by("type", {name: metrics.deadline_misses[name] for name in request_types}))
    out.counter("etp_request_timeouts_total", "Responses missing at the deadline, by request "
                "type (counted in the misses too).",
                _by("type", {name: metrics.timeouts[name] for name in request_types}))
    out.counter("etp_rejected_frames_total", "Frames from the network dropped by protocol "
                "checks, by reason.", _by("reason", metrics.rejected_frames))
    out.counter("etp_bid_rejections_total", "Bids a battery rejected, by reason.",
                _by("reason", metrics.bid_rejections))
    out.counter("etp_messages_received_total", "Protocol messages received, by type.",
                _by("type", metrics.messages_in))
    out.counter("etp_messages_sent_total", "Protocol messages sent, by type.",
                _by("type", metrics.messages_out))
    out.histogram("etp_store_write_latency_seconds", "How long the auction path waited for "
                  "one store write (queueing included), by operation.",
                  [({"operation": name}, hist)
                   for name, hist in sorted(metrics.store_latency.items())])
    out.histogram("etp_event_loop_lag_seconds", "How late the event loop ran a 50 ms timer.",
                  [({}, metrics.loop_lag)])

    # event log and store
    events = source.events
    store = source.store
    stats = store.stats if store is not None else {}
    out.gauge("etp_event_log_last_seq", "Seq of the last event numbered (emitted).",
              _one(events.last_seq if events is not None else None))
    out.gauge("etp_store_pending_rows", "Rows queued in memory, not yet committed (events, "
              "bids and metric rows): the event log's lag behind the store.",
              _one(store.pending_writes if store is not None else None))
    out.counter("etp_store_events_written_total", "Events committed to the store.",
                _one(stats.get("events_written", 0)))
    out.counter("etp_store_rows_dropped_total", "Queued rows dropped (queue full or refused).",
                _one(stats.get("rows_dropped", 0)))
    out.counter("etp_store_flush_errors_total", "Failed batch writes (rows kept and retried "
                "unless refused).", _one(stats.get("flush_errors", 0)))

    # gateway
    http = status.get("http") or {}
    out.counter("etp_http_refused_total", "HTTP requests and connections the server refused, "
                "by status.", _by("status", http.get("refused") or {}))
    out.counter("etp_http_evicted_idle_total", "Idle connections closed to make room.",
                _one(http.get("evicted_idle", 0)))
    ws = status.get("ws") or {}
    out.gauge("etp_ws_clients", "WebSocket clients connected.", _one(ws.get("clients", 0)))
    out.gauge("etp_ws_client_limit", "WebSocket clients allowed at once.",
              _one(ws.get("max_clients")))
    out.counter("etp_ws_refused_total", "WebSocket clients refused, by reason.",
                [({"reason": "auth"}, ws.get("refused_auth", 0)),
                 ({"reason": "limit"}, ws.get("refused_limit", 0))])
    out.counter("etp_ws_resyncs_total", "WebSocket clients told to resync, by cause.",
                [({"cause": "behind"}, ws.get("resync_behind", 0)),
                 ({"cause": "slow"}, ws.get("resync_slow", 0))])
    out.counter("etp_ws_events_sent_total", "Events sent to WebSocket clients.",
                _one(ws.get("events_sent", 0)))
    return out.text()


def metrics_handler(source: MetricsSource, guards: list[Guard]) -> HTTPRouteHandler:
    """GET /metrics for `source`, behind `guards` (a viewer key, as /api/v1)."""

    @get("/metrics", sync_to_thread=False, guards=guards, security=SECURITY,
         media_type=CONTENT_TYPE)
    def prometheus_metrics() -> Response[str]:
        """The hub's figures in the Prometheus text format 0.0.4 (send a viewer key as
        `Authorization: Bearer`)."""
        return Response(render_metrics(source), media_type=CONTENT_TYPE)

    return prometheus_metrics
