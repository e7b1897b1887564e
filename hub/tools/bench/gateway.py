"""`etp bench gateway`: WebSocket fan-out to many clients and the dashboard's REST queries,
measured against a real hub on loopback.

The hub runs as its own process (`etp hub`, its SQLite store seeded beforehand with
`--trades` decided trades and their auctions, and a viewer key); simulated batteries
(hub/tools/sim, the firmware core on CPython) trade with it from this process so events
flow. The WebSocket clients run in worker processes (`gateway_worker.py`), each recording
receive time minus the event's ts_ms for every event. After the measured window, with the
clients still connected and events flowing, this process times the dashboard's queries one
after another over one keep-alive connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http.client
import json
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

from hub.tools.ports import free_port
from hub.tools.sim import SimConfig, SimFleet

__all__ = ["GatewayBenchConfig", "GatewayBenchError", "format_table", "run_gateway_bench"]

REPO = Path(__file__).resolve().parents[3]
_SEED_CHUNK = 20_000
_DAY_MS = 86_400_000
_LATE_WAIT_S = 60.0  # how long an event of the window may take to reach its last client


class GatewayBenchError(RuntimeError):
    """The benchmark could not set up or run its hub or its clients."""


@dataclass
class GatewayBenchConfig:
    """What to measure: clients, how long, the seeded store, the site that makes events."""

    clients: int = 200
    duration_s: float = 20.0
    trades: int = 100_000  # seeded trades (each with its auction); 0: no query timing
    batteries: int = 10  # simulated batteries trading with the hub (the demo's site)
    aggregators: int = 3
    auction_interval_ms: int = 1500
    processes: int = 0  # client processes; 0: one per 500 clients, at most one per core
    deflate: bool = True  # clients offer permessage-deflate, as browsers do
    query_rounds: int = 50  # each dashboard query this many times
    warmup_s: float = 2.0


async def _prepare_store(data_dir: Path, trades: int) -> str:
    """A viewer key and the seeded trades in the hub's (new) store, before the hub starts:
    whoever can write the hub's database is trusted to, as `etp apikey create` is."""
    from hub.auth import Role, issue_api_key
    from hub.store import Store, database_url_for
    from hub.tools.bench.seed import add_trades

    # a day ago, so the live trades are the newest; decided statuses only (a hub starting on
    # recorded or unverified trades would ask their batteries about each)
    first_ms = time.time_ns() // 1_000_000 - _DAY_MS
    async with Store(database_url_for(data_dir)) as store:
        for first_id in range(1, trades + 1, _SEED_CHUNK):
            count = min(_SEED_CHUNK, trades + 1 - first_id)
            await add_trades(
                store, count, first_id=first_id, first_ms=first_ms, statuses=("verified", "void")
            )
        return (await issue_api_key(store, "bench-gateway", Role.VIEWER)).key


class _Http:
    """One keep-alive HTTP connection to the hub with the bench's key (used from a thread)."""

    def __init__(self, port: int, api_key: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {api_key}"}

    def get(self, path: str, params: dict[str, Any] | None = None) -> tuple[int, Any, float]:
        """(status, JSON body, milliseconds from sending the request to the last byte)."""
        target = path + ("?" + urllib.parse.urlencode(params, doseq=True) if params else "")
        started = time.perf_counter()
        try:
            self.connection.request("GET", target, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
        except (http.client.HTTPException, OSError):
            self.connection.close()  # the hub closed an idle connection: once more, anew
            started = time.perf_counter()
            self.connection.request("GET", target, headers=self.headers)
            response = self.connection.getresponse()
            body = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        return response.status, json.loads(body) if body else None, elapsed_ms

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _get(port: int, api_key: str, path: str, params: dict[str, Any] | None = None) -> Any:
    client = _Http(port, api_key)
    try:
        status, body, _ = client.get(path, params)
    finally:
        client.close()
    if status != 200:
        raise GatewayBenchError(f"GET {path} answered {status}: {body}")
    return body


async def _status(port: int, api_key: str) -> dict[str, Any]:
    return await asyncio.to_thread(_get, port, api_key, "/api/v1/status")  # type: ignore[no-any-return]


async def _wait_ready(
    port: int, api_key: str, process: asyncio.subprocess.Process, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise GatewayBenchError(f"hub exited with code {process.returncode} while starting")
        with contextlib.suppress(Exception):
            if (await _status(port, api_key)).get("ready"):
                return
        await asyncio.sleep(0.2)
    raise GatewayBenchError(f"hub not ready after {timeout_s:.0f} s")


def _dashboard_queries(now_ms: int) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, path, parameters) of what the dashboard asks the hub for."""
    return [
        ("status", "/api/v1/status", {}),
        ("batteries", "/api/v1/batteries", {}),
        ("trades", "/api/v1/trades", {"sort": "time", "order": "desc", "limit": 100}),
        (
            "trades_filtered",
            "/api/v1/trades",
            {"status": "verified", "device_id": 3, "sort": "time", "order": "desc"},
        ),
        ("auctions", "/api/v1/auctions", {"sort": "time", "order": "desc", "limit": 100}),
        ("aggregators", "/api/v1/aggregators", {}),
        ("events", "/api/v1/events", {"from_ms": now_ms - 60_000, "limit": 100}),
        # the history view's 24 h range (the seeded trades lie in it) and the overview's
        # competition figure (recomputed at most every 30 s: one computation in the samples)
        ("history_24h", "/api/v1/history",
         {"from_ms": now_ms - 86_400_000, "to_ms": now_ms, "bucket_s": 900}),
        ("competition", "/api/v1/competition", {}),
    ]


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2], 1),
        "p99_ms": round(ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)], 1),
        "max_ms": round(ordered[-1], 1),
    }


def _time_queries(port: int, api_key: str, rounds: int) -> dict[str, Any]:
    """Each dashboard query `rounds` times, round-robin, one at a time (one browser)."""
    queries = _dashboard_queries(time.time_ns() // 1_000_000)
    timings: dict[str, list[float]] = {name: [] for name, _, _ in queries}
    client = _Http(port, api_key)
    try:
        for _ in range(rounds):
            for name, path, params in queries:
                status, body, elapsed_ms = client.get(path, params)
                if status != 200 or not body:
                    raise GatewayBenchError(f"dashboard query {name} answered {status}: {body}")
                timings[name].append(elapsed_ms)
    finally:
        client.close()
    every = [value for values in timings.values() for value in values]
    return {
        "queries": {name: _percentiles(values) for name, values in timings.items()},
        "all": _percentiles(every),
        "parameters": {name: [path, params] for name, path, params in queries},
    }


def _store_seqs(port: int, api_key: str, start_ms: int, end_ms: int) -> list[int]:
    """Seqs of the events the hub logged with ts_ms in [start_ms, end_ms)."""
    seqs: list[int] = []
    after = 0
    while True:
        page = _get(
            port,
            api_key,
            "/api/v1/events",
            {"from_ms": start_ms, "to_ms": end_ms, "after_seq": after, "limit": 1000},
        )
        seqs += [event["seq"] for event in page]
        if len(page) < 1000:
            return seqs
        after = page[-1]["seq"]


def _slowest_events(port: int, api_key: str, reports: list[Any]) -> list[dict[str, Any]]:
    """The five events that reached their last client the latest: seq, kind, size of the
    message, that latency, and how many events the hub emitted in the same millisecond."""
    latest: dict[int, float] = {}
    for report in reports:
        for seq, latency_ms in report["slowest"]:
            latest[seq] = max(latest.get(seq, 0.0), latency_ms)
    described = []
    for seq, latency_ms in sorted(latest.items(), key=lambda item: item[1], reverse=True)[:5]:
        event = _get(port, api_key, "/api/v1/events", {"after_seq": seq - 1, "limit": 1})[0]
        same_ms = _get(
            port,
            api_key,
            "/api/v1/events",
            {"from_ms": event["ts_ms"], "to_ms": event["ts_ms"] + 1, "limit": 1000},
        )
        described.append(
            {
                "seq": seq,
                "kind": event["kind"],
                "bytes": len(json.dumps({"type": "event", **event}, separators=(",", ":"))),
                "latency_ms": round(latency_ms, 1),
                "events_in_same_ms": len(same_ms),
            }
        )
    return described


def _histogram_percentile(histogram: dict[int, int], fraction: float, per_ms: int) -> float:
    total = sum(histogram.values())
    wanted = max(1, math.ceil(total * fraction))
    seen = 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen >= wanted:
            return (bucket + 1) / per_ms  # the bucket's upper edge
    return 0.0


class _Workers:
    """The client processes: started, read line by line, told the window, always ended."""

    def __init__(self) -> None:
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(
        self, config: GatewayBenchConfig, ws_url: str, http_url: str, key: str, deadline_s: float
    ) -> None:
        # each process takes its share of the machine's CPU from the hub: as few as keep up
        # (about 30 µs of a client process's CPU per delivery, measured)
        count = config.processes or min(
            psutil.cpu_count() or 1, max(1, math.ceil(config.clients / 500))
        )
        count = min(count, config.clients)
        share = [
            config.clients // count + (1 if n < config.clients % count else 0) for n in range(count)
        ]
        first = 0
        for clients in share:
            worker_config = {
                "ws_url": ws_url,
                "http_url": http_url,
                "key": key,
                "clients": clients,
                "first_index": first,
                "deflate": config.deflate,
                "deadline_s": deadline_s,
            }
            first += clients
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "hub.tools.bench.gateway_worker",
                    json.dumps(worker_config),
                    cwd=REPO,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    limit=2**26,
                )
            )

    async def _line(self, process: asyncio.subprocess.Process, timeout_s: float) -> Any:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        if not line:
            raise GatewayBenchError(f"client process {process.pid} exited ({process.returncode})")
        return json.loads(line)

    async def ready(self, timeout_s: float) -> None:
        """Wait until every client of every process has its snapshot."""
        await asyncio.gather(*(self._line(process, timeout_s) for process in self.processes))

    async def report(
        self, start_ms: int, end_ms: int, through_seq: int | None, wait_s: float
    ) -> list[Any]:
        """Send each process the window (and the last seq to wait for); return their figures."""
        request = {"window_ms": [start_ms, end_ms], "through_seq": through_seq, "wait_s": wait_s}
        message = (json.dumps(request) + "\n").encode()
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(message)
            await process.stdin.drain()
        return list(
            await asyncio.gather(*(self._line(process, wait_s + 60) for process in self.processes))
        )

    async def stop(self) -> None:
        """End every process still running (closing stdin first lets it leave by itself)."""
        for process in self.processes:
            if process.stdin is not None and not process.stdin.is_closing():
                process.stdin.close()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


def _cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def run_gateway_bench(config: GatewayBenchConfig) -> dict[str, Any]:
    """Run one measurement and return its figures (JSON-ready)."""
    workdir = Path(tempfile.mkdtemp(prefix="etp-bench-gateway-"))
    try:
        return await _run(config, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(config: GatewayBenchConfig, workdir: Path) -> dict[str, Any]:
    from hub.settings import load_master_secret

    data_dir = workdir / "data"
    seed_started = time.monotonic()
    api_key = await _prepare_store(data_dir, config.trades)
    seed_s = time.monotonic() - seed_started
    master = load_master_secret(data_dir / "master.key")
    http_port, mqtt_port = free_port(), free_port()
    env = dict(os.environ)
    env.pop("ETP_DATABASE_URL", None)
    env.pop("ETP_MQTT_URL", None)
    env.update(
        {
            "ETP_DATA_DIR": str(data_dir),
            "ETP_HTTP_PORT": str(http_port),
            "ETP_MQTT_PORT": str(mqtt_port),
            "ETP_AGGREGATORS": str(config.aggregators),
            "ETP_AUCTION_INTERVAL_MS": str(config.auction_interval_ms),
            "ETP_LOG_LEVEL": "warning",
            # the aggregators keep buying for the whole run
            "ETP_AGGREGATOR_DEMAND_SCALE": "1000",
            # room for every client: WebSockets count as HTTP connections too
            "ETP_WS_MAX_CLIENTS": str(config.clients),
            "ETP_WS_MAX_CLIENTS_PER_KEY": str(config.clients),
            "ETP_HTTP_MAX_CONNECTIONS": str(config.clients + 50),
            "ETP_HTTP_BACKLOG": str(max(128, config.clients)),
        }
    )
    log_path = workdir / "hub.log"
    with open(log_path, "wb") as log_file:
        hub = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.cli.main",
            "hub",
            cwd=REPO,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    fleet: SimFleet | None = None
    workers = _Workers()
    try:
        await _wait_ready(http_port, api_key, hub, 60)
        fleet = SimFleet(
            SimConfig(
                mqtt_url=f"mqtt://127.0.0.1:{mqtt_port}",
                site="site1",
                master_secret=master,
                count=config.batteries,
                overrides={"delivery_s": 36000, "floor_wh": 0},
                capacity_wh=(400_000, 800_000),
            )
        )
        await fleet.start()
        # the hub's CPU while it trades with no client connected: the share the clients add
        # is what the window measures beyond it
        hub_process = psutil.Process(hub.pid)
        await asyncio.sleep(config.warmup_s)
        baseline_s = min(5.0, config.duration_s)
        idle_cpu = _cpu_s(hub_process)
        market_idle = (await _status(http_port, api_key))["market"]
        await asyncio.sleep(baseline_s)
        baseline_cpu_per_s = (_cpu_s(hub_process) - idle_cpu) / baseline_s
        market_baseline = (await _status(http_port, api_key))["market"]
        baseline_auctions_per_s = (
            market_baseline["auctions_opened"] - market_idle["auctions_opened"]
        ) / baseline_s
        # the clients end by themselves after the whole run could have taken
        deadline_s = (
            120 + _LATE_WAIT_S + config.clients * 0.2 + config.duration_s + config.query_rounds * 5
        )
        await workers.start(
            config,
            f"ws://127.0.0.1:{http_port}/ws",
            f"http://127.0.0.1:{http_port}",
            api_key,
            deadline_s,
        )
        connect_started = time.monotonic()
        await workers.ready(60 + config.clients * 0.1)
        connect_s = time.monotonic() - connect_started
        await asyncio.sleep(config.warmup_s)

        broker = hub_process.children()  # the embedded broker runs as the hub's child
        worker_processes = [psutil.Process(process.pid) for process in workers.processes]
        this_process = psutil.Process()
        before = await _status(http_port, api_key)
        cpu_before = {
            "hub": _cpu_s(hub_process),
            "broker": sum(_cpu_s(child) for child in broker),
            "clients": sum(_cpu_s(process) for process in worker_processes),
            "fleet": _cpu_s(this_process),
        }
        machine_before = psutil.cpu_times()
        start_ms = time.time_ns() // 1_000_000
        started = time.monotonic()
        await asyncio.sleep(config.duration_s)
        end_ms = time.time_ns() // 1_000_000
        elapsed = time.monotonic() - started
        cpu_after = {
            "hub": _cpu_s(hub_process),
            "broker": sum(_cpu_s(child) for child in broker),
            "clients": sum(_cpu_s(process) for process in worker_processes),
            "fleet": _cpu_s(this_process),
        }
        machine_after = psutil.cpu_times()
        after = await _status(http_port, api_key)
        rss_mb = hub_process.memory_info().rss / 1e6

        # the clients stay connected and events keep flowing: the dashboard's queries now,
        # which also gives the window's last events time to arrive
        grace_started = time.monotonic()
        queries = None
        if config.trades > 0:
            queries = await asyncio.to_thread(
                _time_queries, http_port, api_key, config.query_rounds
            )
        await asyncio.sleep(max(0.0, 5.0 - (time.monotonic() - grace_started)))
        expected = await asyncio.to_thread(_store_seqs, http_port, api_key, start_ms, end_ms)
        reports = await workers.report(
            start_ms, end_ms, max(expected) if expected else None, _LATE_WAIT_S
        )
        slowest = await asyncio.to_thread(_slowest_events, http_port, api_key, reports)
    except BaseException:
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        sys.stderr.write(tail)
        raise
    finally:
        await workers.stop()
        await _stop_hub(hub, fleet)

    busy_before = sum(machine_before) - machine_before.idle - getattr(machine_before, "iowait", 0)
    busy_after = sum(machine_after) - machine_after.idle - getattr(machine_after, "iowait", 0)
    return _figures(
        config,
        elapsed=elapsed,
        expected=expected,
        reports=reports,
        cpu={name: cpu_after[name] - cpu_before[name] for name in cpu_before},
        machine_busy_s=busy_after - busy_before,
        before=before,
        after=after,
        queries=queries,
        extra={
            "slowest_events": slowest,
            "hub_cpu_percent_without_clients": round(100 * baseline_cpu_per_s, 1),
            "auctions_per_s_without_clients": round(baseline_auctions_per_s, 1),
            "seed_s": round(seed_s, 1),
            "connect_s": round(connect_s, 1),
            "hub_rss_mb": round(rss_mb, 1),
        },
    )


async def _stop_hub(hub: asyncio.subprocess.Process, fleet: SimFleet | None) -> None:
    """SIGINT the hub (its broker child goes with it), then the fleet; kill if it hangs, and
    kill whatever child of the hub is left."""
    if fleet is not None:
        fleet.expect_disconnect = True
        loop = asyncio.get_running_loop()

        def quiet_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            # the broker goes away under the simulator's sockets (EBADF): expected here
            exc = context.get("exception")
            if isinstance(exc, OSError) and exc.errno == errno.EBADF:
                return
            loop.default_exception_handler(context)

        loop.set_exception_handler(quiet_teardown)
        logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    children: list[psutil.Process] = []
    if hub.returncode is None:
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(hub.pid).children(recursive=True)
        hub.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(hub.wait(), 30)
        except TimeoutError:
            hub.kill()
            await hub.wait()
    for child in children:  # the embedded broker, had the hub not stopped it
        with contextlib.suppress(psutil.Error):
            child.kill()
    if fleet is not None:
        await fleet.stop()


def _figures(
    config: GatewayBenchConfig,
    *,
    elapsed: float,
    expected: list[int],
    reports: list[Any],
    cpu: dict[str, float],
    machine_busy_s: float,
    before: dict[str, Any],
    after: dict[str, Any],
    queries: dict[str, Any] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    clients = [client for report in reports for client in report["clients"]]
    histogram: dict[int, int] = {}
    for report in reports:
        for bucket, count in report["histogram"].items():
            histogram[int(bucket)] = histogram.get(int(bucket), 0) + count
    per_ms = 10  # the workers' buckets: 0.1 ms
    wanted = (min(expected), max(expected), len(expected)) if expected else (None, None, 0)
    complete = sum(
        1
        for client in clients
        if (client["first"], client["last"], client["count"]) == wanted
        and client["duplicates"] == 0
        and client["failure"] is None
    )
    deliveries = sum(client["count"] for client in clients)
    seconds: dict[int, list[float]] = {}
    for report in reports:
        for second, (count, total_ms, largest_ms) in report["seconds"].items():
            merged = seconds.setdefault(int(second), [0, 0.0, 0.0])
            merged[0] += count
            merged[1] += total_ms
            merged[2] = max(merged[2], largest_ms)
    ws_before, ws_after = before["ws"], after["ws"]
    return {
        "config": asdict(config),
        "elapsed_s": round(elapsed, 2),
        "clients": len(clients),
        "client_processes": len(reports),
        "clients_failed": [client["failure"] for client in clients if client["failure"]],
        "auctions_per_s": round(
            (after["market"]["auctions_opened"] - before["market"]["auctions_opened"]) / elapsed, 1
        ),
        "deadline_misses": sum(after["metrics"]["deadline_misses"].values())
        - sum(before["metrics"]["deadline_misses"].values()),
        "events": len(expected),
        "events_per_s": round(len(expected) / elapsed, 1),
        "seqs_gapless": bool(expected) and max(expected) - min(expected) + 1 == len(expected),
        "deliveries": deliveries,
        "deliveries_per_s": round(deliveries / elapsed),
        "fan_out_ms": {
            "p50": _histogram_percentile(histogram, 0.50, per_ms) if histogram else None,
            "p99": _histogram_percentile(histogram, 0.99, per_ms) if histogram else None,
            "max": round(max(report["max_ms"] for report in reports), 1),
        },
        # mean and max fan-out of the events emitted in each second of the window: flat under
        # a load the hub keeps up with, growing when it falls behind
        "fan_out_by_second_ms": [
            [round(total / count, 1) if count else None, round(largest, 1)]
            for count, total, largest in (seconds[n] for n in sorted(seconds))
        ],
        "clients_with_every_event": complete,
        "resyncs": sum(client["resyncs"] for client in clients),
        "reconnects": sum(client["reconnects"] for client in clients),
        "hub_resyncs_slow": ws_after["resync_slow"] - ws_before["resync_slow"],
        "hub_loop_lag_ms": after["metrics"].get("loop_lag_ms"),
        # each client process's event-loop lag over the run (its delays add to fan-out)
        "client_loop_lag_ms": [report.get("loop_lag_ms") for report in reports],
        "hub_events_sent": ws_after["events_sent"] - ws_before["events_sent"],
        "hub_cpu_s": round(cpu["hub"], 2),
        "hub_cpu_percent": round(100 * cpu["hub"] / elapsed, 1),
        "broker_cpu_percent": round(100 * cpu["broker"] / elapsed, 1),
        "clients_cpu_percent": round(100 * cpu["clients"] / elapsed, 1),
        "fleet_cpu_percent": round(100 * cpu["fleet"] / elapsed, 1),
        "machine_cores": psutil.cpu_count(),
        "machine_busy_percent": round(100 * machine_busy_s / elapsed, 1),
        "other_cpu_percent": round(100 * (machine_busy_s - sum(cpu.values())) / elapsed, 1),
        "hub_cpu_us_per_delivery": (
            round(
                (cpu["hub"] - extra["hub_cpu_percent_without_clients"] / 100 * elapsed)
                / deliveries
                * 1e6,
                1,
            )
            if deliveries
            else None
        ),
        "dashboard_queries": queries,
        **extra,
    }


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of one run."""
    cfg = result["config"]
    fan_out = result["fan_out_ms"]
    rows = [
        ("clients (processes)", f"{result['clients']} ({result['client_processes']})"),
        ("events/s", result["events_per_s"]),
        (
            "auctions/s (without clients)",
            f"{result['auctions_per_s']} ({result['auctions_per_s_without_clients']})",
        ),
        ("deadline misses (market)", result.get("deadline_misses")),
        ("deliveries/s", result["deliveries_per_s"]),
        ("fan-out p50 / p99 / max ms", f"{fan_out['p50']} / {fan_out['p99']} / {fan_out['max']}"),
        (
            "clients with every event",
            f"{result['clients_with_every_event']} of "
            f"{result['clients']} ({result['events']} events)",
        ),
        ("resyncs in the window (hub)", result["hub_resyncs_slow"]),
        ("resyncs / reconnects (whole run)", f"{result['resyncs']} / {result['reconnects']}"),
        ("hub CPU s (% of one core)", f"{result['hub_cpu_s']} ({result['hub_cpu_percent']} %)"),
        ("hub CPU % without clients", result["hub_cpu_percent_without_clients"]),
        ("hub CPU per delivery µs (beyond)", result["hub_cpu_us_per_delivery"]),
        (
            "broker / clients / fleet CPU %",
            f"{result['broker_cpu_percent']} / "
            f"{result['clients_cpu_percent']} / {result['fleet_cpu_percent']}",
        ),
        ("other processes CPU %", result["other_cpu_percent"]),
        (
            "machine busy % (of 1 core)",
            f"{result['machine_busy_percent']} ({result['machine_cores']} cores)",
        ),
        (
            "hub event-loop lag p99 / max ms",
            f"{(result['hub_loop_lag_ms'] or {}).get('p99_ms')} / "
            f"{(result['hub_loop_lag_ms'] or {}).get('max_ms')}",
        ),
        (
            "client loops' lag p99/max ms",
            " ".join(
                f"{lag['p99']}/{lag['max']}"
                for lag in result.get("client_loop_lag_ms") or []
                if lag
            ),
        ),
        ("hub RSS MB", result["hub_rss_mb"]),
    ]
    lines = [
        f"etp bench gateway — {result['clients']} WebSocket clients, {cfg['batteries']} "
        f"batteries trading, {result['elapsed_s']} s measured",
        "",
        *(f"{label:<34}{value!s:>16}" for label, value in rows),
    ]
    if result["clients_failed"]:
        lines.append(f"client failures: {sorted(set(result['clients_failed']))[:3]}")
    slowest = result.get("slowest_events") or []
    if slowest:
        lines += ["", "slowest events to reach their last client:"]
        lines += [
            f"  seq {event['seq']} {event['kind']} ({event['bytes']} B, "
            f"{event['events_in_same_ms']} emitted in that ms): {event['latency_ms']} ms"
            for event in slowest
        ]
    queries = result.get("dashboard_queries")
    if queries:
        lines += [
            "",
            f"dashboard queries, {cfg['trades']:,} trades stored (one client, while the "
            "fan-out runs)",
            f"{'query':<18}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
        ]
        for name, figures in [*queries["queries"].items(), ("all", queries["all"])]:
            lines.append(
                f"{name:<18}{figures['count']:>7}{figures['p50_ms']:>10}{figures['p99_ms']:>10}"
                f"{figures['max_ms']:>10}"
            )
    return "\n".join(lines)
