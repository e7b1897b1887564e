"""`etp bench flood`: does one flooding client hurt the other batteries' trading?

A hub (with its embedded broker) trades with N well-behaved simulated batteries (hub/tools/sim:
the firmware core on CPython) for a baseline window; then one more client floods it for a
window of the same length, at a multiple (10x by default) of the frame rate the whole fleet
sent in the baseline, with bad and good-looking frames on its own device's topics (see
hub.tools.bench.flood_worker; it runs in its own process). Measured at the hub, per window:
the Query->QueryResponse latency (p50/p99/max, the hub's own samples: send to receipt), the
trades, the frames rejected by reason, the quarantine; at the end the trades the hub counts are
compared with those the batteries committed (none lost, none invented).

The hub and the fleet share this process (as in the tests); the broker is the hub's child
process, the flooder a third. The latency target (p99 under 50 ms with the flood) is for an
idle machine.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from hub.tools.bench.flood_worker import KINDS

__all__ = ["FloodConfig", "format_table", "run_flood"]


@dataclass
class FloodConfig:
    """What to run: fleet size and cadence, window lengths, how hard to flood."""

    batteries: int = 20
    aggregators: int = 3
    window_s: float = 15.0  # each of the baseline and flood windows
    warmup_s: float = 3.0
    multiple: float = 10.0  # flood rate = multiple x the fleet's baseline frame rate
    flood_rate: float | None = None  # frames/s; overrides `multiple` when given
    auction_interval_ms: int = 1000
    status_ms: int = 1000
    quarantine_after: int = 500  # the hub's default (ETP_FLOOD_QUARANTINE_AFTER)
    quarantine_s: float = 60.0
    broker: Literal["embedded", "mosquitto"] = "embedded"


@dataclass
class _Mark:
    """Counters at the start of a window."""

    at: float
    wall: float
    queries: int
    loop_lag: int
    trades: int
    published: int
    rejected: Counter[str]
    events: int


def _latency(samples: list[float]) -> dict[str, Any]:
    if not samples:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(samples)
    last = len(ordered) - 1
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[round(0.50 * last)], 2),
        "p99_ms": round(ordered[round(0.99 * last)], 2),
        "max_ms": round(ordered[-1], 2),
    }


def _recent(hist: Any, since_count: int) -> list[float]:
    """The samples a LatencyHistogram took since it had `since_count` (within its window)."""
    if hist is None:
        return []
    new = hist.count - since_count
    return list(hist.samples)[-new:] if new > 0 else []


async def run_flood(config: FloodConfig, *, data_dir: Path | None = None) -> dict[str, Any]:
    """Run the baseline and the flood windows; return the figures (JSON-ready)."""
    from hub.tools.bench.hub import _mosquitto

    with tempfile.TemporaryDirectory(prefix="etp-bench-flood-") as tmp:
        if data_dir is None:
            data_dir = Path(tmp) / "data"
        if config.broker == "embedded":
            return await _run(config, data_dir, None)
        async with _mosquitto(Path(tmp)) as (mqtt_url, _pid):
            return await _run(config, data_dir, mqtt_url)


async def _run(config: FloodConfig, data_dir: Path, mqtt_url: str | None) -> dict[str, Any]:
    from hub.runtime import HubRuntime
    from hub.settings import Settings, load_master_secret
    from hub.store import database_url_for
    from hub.tools.bench.hub import bench_fleet, compare_trades, hub_trades
    from hub.tools.ports import free_port
    from hub.tools.sim import SimFleet

    settings = Settings(
        data_dir=data_dir,
        mqtt_url=mqtt_url,  # None: the hub's embedded broker
        mqtt_port=free_port(),
        http_enabled=False,
        aggregators=config.aggregators,
        aggregator_demand_scale=1000,  # buyers keep buying for the whole run
        auction_interval_ms=config.auction_interval_ms,
        status_period_ms=config.status_ms,
        flood_quarantine_after=config.quarantine_after,
        flood_quarantine_s=config.quarantine_s,
        settlement_network="off",  # the trading path is measured; `etp bench settle` the rest
        log_level="warning",
    )
    master = load_master_secret(settings.master_secret_path())
    flooder_id = config.batteries + 1  # a device id of its own, next to the fleet's
    load_before = os.getloadavg()
    hub = HubRuntime(settings)
    await hub.start()
    fleet: SimFleet | None = None
    flooder: asyncio.subprocess.Process | None = None
    try:
        fleet = bench_fleet(hub.mqtt_url, settings.site, master, config.batteries,
                            config.status_ms)
        await fleet.start()
        await asyncio.sleep(config.warmup_s)
        baseline_start = _mark(hub, fleet)
        await asyncio.sleep(config.window_s)
        baseline_end = _mark(hub, fleet)
        baseline = _window(hub, fleet, baseline_start, baseline_end)
        fleet_rate = baseline["fleet_frames_per_s"]
        rate = config.flood_rate or max(1.0, config.multiple * fleet_rate)
        flooder = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.tools.bench.flood_worker",
            "--mqtt-url",
            hub.mqtt_url,
            "--site",
            settings.site,
            "--master-file",
            str(settings.master_secret_path()),
            "--device",
            str(flooder_id),
            "--victim",
            "1",
            "--rate",
            str(rate),
            "--duration",
            str(config.window_s),
            stdout=asyncio.subprocess.PIPE,
        )
        flood_start = _mark(hub, fleet)
        out, _ = await asyncio.wait_for(flooder.communicate(), config.window_s + 30)
        flood_end = _mark(hub, fleet)
        if flooder.returncode != 0:
            raise RuntimeError(f"the flooding client failed (exit {flooder.returncode})")
        flood = _window(hub, fleet, flood_start, flood_end)
        sent = json.loads(out.decode().strip().splitlines()[-1])
        assert hub.gate is not None and hub.store is not None and hub.auctions is not None
        quarantines = await hub.read_events(0, 1000, ["device_quarantined"])
        opened_for_flooder = [
            e
            for e in await hub.read_events(0, 100_000, ["auction_opened"])
            if e["device_id"] == flooder_id
        ]
        flood |= {
            "flooder": sent,
            "flooder_device": flooder_id,
            "quarantined": [e["device_id"] for e in quarantines],
            "quarantined_after_s": (
                round((quarantines[0]["ts_ms"] / 1000) - flood_start.wall, 2)
                if quarantines
                else None
            ),
            "auctions_for_flooder": len(opened_for_flooder),
        }
    finally:
        if flooder is not None and flooder.returncode is None:
            flooder.kill()
            await flooder.wait()
        await hub.stop()
        if fleet is not None:
            fleet.expect_disconnect = True
            await fleet.stop()
    trades = await hub_trades(database_url_for(data_dir))
    committed = fleet.committed_trades()
    undecided, audit = await _after(data_dir)
    return {
        "config": asdict(config) | {"flood_rate": round(rate, 1)},
        "load_before": [round(x, 2) for x in load_before],
        "baseline": baseline,
        "flood": flood,
        **compare_trades(trades, committed),
        "undecided_trades": undecided,
        "audit": audit,
    }


def _mark(hub: Any, fleet: Any) -> _Mark:
    query = hub.metrics.latency.get("query")
    return _Mark(
        at=time.monotonic(),
        wall=time.time(),
        queries=query.count if query is not None else 0,
        loop_lag=hub.metrics.loop_lag.count,
        trades=hub.auctions.totals.trades,
        published=fleet.published,
        rejected=Counter(hub.metrics.rejected_frames),
        events=hub.events.last_seq if hub.events is not None else 0,
    )


def _window(hub: Any, fleet: Any, start: _Mark, end: _Mark) -> dict[str, Any]:
    """The figures of one window, from the hub's own counters and samples."""
    elapsed = end.at - start.at
    query = hub.metrics.latency.get("query")
    rejected = Counter(end.rejected)
    rejected.subtract(start.rejected)
    return {
        "elapsed_s": round(elapsed, 2),
        "query_latency_ms": _latency(_recent(query, start.queries)),
        "hub_loop_lag_ms": _latency(_recent(hub.metrics.loop_lag, start.loop_lag)),
        "trades": end.trades - start.trades,
        "trades_per_s": round((end.trades - start.trades) / elapsed, 2),
        "fleet_frames_per_s": round((end.published - start.published) / elapsed, 1),
        "rejected_frames": {k: v for k, v in sorted(rejected.items()) if v},
    }


async def _after(data_dir: Path) -> tuple[int, dict[str, int]]:
    """After the hub stopped: trades left recorded or unverified (neither proven nor void),
    and what the security audit log holds of the rejections (few events, every frame)."""
    from hub.security.audit import list_security_events
    from hub.store import Store, database_url_for

    async with Store(database_url_for(data_dir), event_seq_block=2) as store:
        undecided = len(await store.list_trades(status=("recorded", "unverified")))
        rows = await list_security_events(store, kinds=["frames_rejected"], limit=100_000)
    audit = {
        "frames_rejected_events": len(rows),
        "frames_rejected_counted": sum(int(row.payload.get("count", 0)) for row in rows),
    }
    return undecided, audit


def format_table(result: dict[str, Any]) -> str:
    """Human-readable summary of one run."""
    cfg, base, flood = result["config"], result["baseline"], result["flood"]
    sent = flood["flooder"]

    def lat(window: dict[str, Any]) -> str:
        q = window["query_latency_ms"]
        return f"{q['p50_ms']} / {q['p99_ms']} / {q['max_ms']} ms ({q['count']})"

    lines = [
        f"etp bench flood — {cfg['broker']} broker, {cfg['batteries']} batteries, auctions every "
        f"{cfg['auction_interval_ms']} ms each, {cfg['window_s']} s per window; load average "
        f"before {result['load_before'][0]}",
        f"flooder: device {flood['flooder_device']}, {sent['sent']} frames at "
        f"{sent['rate_per_s']}/s = {sent['rate_per_s'] / max(base['fleet_frames_per_s'], 0.1):.1f}"
        f"x the fleet's {base['fleet_frames_per_s']}/s",
        "  " + ", ".join(f"{k} {sent['by_kind'].get(k, 0)}" for k in KINDS),
        "",
        f"{'':<30}{'baseline':>34}{'flood':>34}",
        f"{'Query->Response p50/p99/max':<30}{lat(base):>34}{lat(flood):>34}",
        f"{'hub loop lag p99 ms':<30}{base['hub_loop_lag_ms']['p99_ms']!s:>34}"
        f"{flood['hub_loop_lag_ms']['p99_ms']!s:>34}",
        f"{'trades (per s)':<30}{base['trades']:>26} ({base['trades_per_s']:>5})"
        f"{flood['trades']:>26} ({flood['trades_per_s']:>5})",
        "",
        f"rejected in the flood window: {flood['rejected_frames']}",
        f"quarantined: {flood['quarantined'] or 'none'}"
        + (f" after {flood['quarantined_after_s']} s" if flood["quarantined_after_s"] else "")
        + f"; auctions opened for the flooder: {flood['auctions_for_flooder']}",
        f"trades: {result['trades_recorded']} verified by the hub, "
        f"{result['trades_committed_by_batteries']} committed by batteries; lost "
        f"{result['lost_accepted_trades']}, not committed "
        f"{result['trades_not_committed_by_batteries']}, mismatched "
        f"{result['mismatched_trades']}, undecided {result['undecided_trades']}",
        f"security audit log: {result['audit']['frames_rejected_counted']} rejected frames in "
        f"{result['audit']['frames_rejected_events']} frames_rejected events",
    ]
    return "\n".join(lines)
