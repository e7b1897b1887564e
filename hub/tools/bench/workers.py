"""`etp bench hub --workers N`: N hub workers (`etp hub --worker` processes) sharing one site
on Mosquitto and PostgreSQL, driven by the simulated fleet as `etp bench hub` drives one hub.

Where the CPU goes is measured per part (workers, broker, database, simulator, the rest of the
machine), so a run on a small machine shows what limited it. The trades the store counts are
compared with the batteries' own audit trails after the workers stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import psutil

from hub.tools.bench.hub import (
    BenchConfig,
    BenchError,
    _mosquitto,
    bench_fleet,
    compare_trades,
    hub_trades,
)
from hub.tools.sim import SimFleet
from hub.tools.sim.workers import WorkerSite

__all__ = ["format_workers_table", "run_workers_bench"]


def _cpu(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process on this machine (connections come and go)."""
    seen = {}
    for process in psutil.process_iter(["name", "cpu_times"]):
        times = process.info["cpu_times"]
        if process.info["name"] == "postgres" and times is not None:
            seen[process.pid] = times.user + times.system
    return seen


async def run_workers_bench(
    config: BenchConfig, workers: int, database_url: str | None = None
) -> dict[str, Any]:
    """One measurement with `workers` workers; a throwaway PostgreSQL unless `database_url`
    (an empty database) is given."""
    workdir = Path(tempfile.mkdtemp(prefix="etp-bench-workers-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            mqtt_url = config.mqtt_url
            broker_pid = None
            if mqtt_url is None:
                mqtt_url, broker_pid = await stack.enter_async_context(_mosquitto(workdir))
            if database_url is None:
                from hub.tools.pg import postgres_missing_reason, postgres_server

                reason = postgres_missing_reason()
                if reason is not None:
                    raise BenchError(f"no PostgreSQL for the workers: {reason}")
                database_url = stack.enter_context(postgres_server())
            return await _run(config, workers, workdir, mqtt_url, broker_pid, database_url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    config: BenchConfig, count: int, workdir: Path, mqtt_url: str, broker_pid: int | None,
    database_url: str,
) -> dict[str, Any]:
    from hub.settings import load_master_secret

    interval_ms = config.auction_interval_ms
    if config.auctions_per_s > 0:
        interval_ms = max(10, config.batteries * 1000 // config.auctions_per_s)
    site = WorkerSite(
        workdir, mqtt_url, database_url,
        ETP_AGGREGATORS=str(config.aggregators), ETP_AUCTION_INTERVAL_MS=str(interval_ms),
        ETP_STATUS_PERIOD_MS=str(config.status_ms), ETP_MECHANISM=config.mechanism,
        ETP_MAX_PARALLEL_AUCTIONS=str(config.max_parallel_auctions), ETP_LOG_LEVEL="warning",
        ETP_SETTLEMENT_NETWORK="off", ETP_AGGREGATOR_DEMAND_SCALE="1000",
        ETP_METRICS_SNAPSHOT_INTERVAL_S="0",
    )
    await site.prepare()
    fleet: SimFleet | None = None
    try:
        for _ in range(count):
            site.add()
        await site.wait_ready()
        fleet = bench_fleet(mqtt_url, "site1", load_master_secret(site.data_dir / "master.key"),
                            config.batteries, config.status_ms, connections=config.connections)
        await fleet.start()
        gc.collect()
        gc.freeze()
        deadline = time.monotonic() + 60
        while True:  # every battery owned by some worker
            statuses = [await w.astatus() for w in site.workers]
            owned = sum((s.get("cluster") or {}).get("batteries_owned", 0) for s in statuses)
            if owned >= config.batteries:
                break
            if time.monotonic() > deadline:
                raise BenchError(f"only {owned} of {config.batteries} batteries owned after 60 s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(config.warmup_s)
        worker_procs = [psutil.Process(w.proc.pid) for w in site.workers if w.proc]
        broker_procs = [psutil.Process(broker_pid)] if broker_pid else []
        db_before = _postgres_cpu()
        sim_proc = [psutil.Process()]
        parts = {"workers": worker_procs, "broker": broker_procs, "simulator": sim_proc}
        cpu_before = {name: _cpu(procs) for name, procs in parts.items()}
        per_worker_before = [_cpu([p]) for p in worker_procs]
        machine_before = psutil.cpu_times()
        before = [await w.astatus() for w in site.workers]
        started = time.monotonic()
        await asyncio.sleep(config.duration_s)
        elapsed = time.monotonic() - started
        after = [await w.astatus() for w in site.workers]
        cpu = {name: round((_cpu(procs) - cpu_before[name]) / elapsed, 2)
               for name, procs in parts.items()}
        db_after = _postgres_cpu()  # a process that ended meanwhile is not counted
        cpu["database"] = round(
            sum(t - db_before.get(pid, 0.0) for pid, t in db_after.items()) / elapsed, 2)
        per_worker = [round((_cpu([p]) - b) / elapsed, 2)
                      for p, b in zip(worker_procs, per_worker_before, strict=True)]
        machine_after = psutil.cpu_times()
    except BaseException:
        for worker in site.workers:
            worker.kill()
        if fleet is not None:
            fleet.expect_disconnect = True
            await fleet.stop()
        raise
    await site.stop()
    fleet.expect_disconnect = True
    await asyncio.sleep(0.3)
    await fleet.stop()
    trades = compare_trades(await hub_trades(database_url), fleet.committed_trades())

    def total(statuses: list[dict[str, Any]], *path: str) -> int:
        value = 0
        for status in statuses:
            node: Any = status
            for key in path:
                node = (node or {}).get(key, {})
            value += sum(node.values()) if isinstance(node, dict) else int(node or 0)
        return value

    def rate(*path: str) -> float:
        return round((total(after, *path) - total(before, *path)) / elapsed, 1)

    busy = lambda t: sum(t) - t.idle - getattr(t, "iowait", 0.0)  # noqa: E731
    machine = (busy(machine_after) - busy(machine_before)) / elapsed
    latency: dict[str, dict[str, float]] = {}
    for status in after:
        for name, hist in (status.get("metrics") or {}).get("latency_ms", {}).items():
            worst = latency.setdefault(name, {"p50_ms": 0.0, "p99_ms": 0.0})
            worst["p50_ms"] = max(worst["p50_ms"], hist.get("p50_ms") or 0.0)
            worst["p99_ms"] = max(worst["p99_ms"], hist.get("p99_ms") or 0.0)
    return {
        "config": asdict(config) | {"auction_interval_ms": interval_ms},
        "workers": count,
        "elapsed_s": round(elapsed, 2),
        "batteries_owned": [(s.get("cluster") or {}).get("batteries_owned") for s in after],
        "auctions_per_s": rate("market", "auctions_opened"),
        "trades_per_s": rate("market", "trades"),
        "trades_per_s_by_worker": [
            round(((a.get("market") or {}).get("trades", 0)
                   - (b.get("market") or {}).get("trades", 0)) / elapsed, 1)
            for a, b in zip(after, before, strict=True)
        ],
        "hub_msg_per_s": round(rate("metrics", "messages_in") + rate("metrics", "messages_out")),
        "deadline_misses": total(after, "metrics", "deadline_misses")
        - total(before, "metrics", "deadline_misses"),
        "timeouts_lost_responses": total(after, "metrics", "timeouts")
        - total(before, "metrics", "timeouts"),
        "latency_ms_worst_worker": latency,
        "cpu_cores": cpu | {"machine": round(machine, 2),
                            "other": round(max(0.0, machine - sum(cpu.values())), 2)},
        "cpu_cores_by_worker": per_worker,
        "cores": psutil.cpu_count(),
        **trades,
    }


def format_workers_table(results: list[dict[str, Any]]) -> str:
    """One column per run (1 worker, 2 workers, ...), and the ratio to the first."""
    first = results[0]
    cfg = first["config"]
    head = f"{'':<34}" + "".join(f"{str(r['workers']) + ' worker(s)':>16}" for r in results)
    rows = [
        f"etp bench hub --workers — {cfg['batteries']} batteries, auction every "
        f"{cfg['auction_interval_ms']} ms, Mosquitto + PostgreSQL, {first['cores']} cores",
        "",
        head,
    ]

    def row(label: str, values: list[Any]) -> None:
        rows.append(f"{label:<34}" + "".join(f"{v!s:>16}" for v in values))

    row("trades/s", [r["trades_per_s"] for r in results])
    row("auctions/s", [r["auctions_per_s"] for r in results])
    base = first["trades_per_s"] or 1.0
    row("trades/s vs 1st column", [round(r["trades_per_s"] / base, 2) for r in results])
    row("trades/s by worker", ["/".join(str(t) for t in r["trades_per_s_by_worker"])
                               for r in results])
    row("hub msg/s (in+out)", [r["hub_msg_per_s"] for r in results])
    for part in ("workers", "broker", "database", "simulator", "other", "machine"):
        row(f"CPU cores: {part}", [r["cpu_cores"][part] for r in results])
    row("deadline misses", [r["deadline_misses"] for r in results])
    row("lost responses (timeouts)", [r["timeouts_lost_responses"] for r in results])
    row("lost accepted trades", [r["lost_accepted_trades"] for r in results])
    row("trades not committed by battery", [r["trades_not_committed_by_batteries"]
                                            for r in results])
    for name in sorted(first["latency_ms_worst_worker"]):
        row(f"{name} p99 ms (worst worker)",
            [r["latency_ms_worst_worker"].get(name, {}).get("p99_ms") for r in results])
    return "\n".join(rows)
