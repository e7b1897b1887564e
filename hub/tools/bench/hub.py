"""`etp bench hub`: a real hub process driven by simulated batteries; prints measured capacity.

The hub runs as its own process (`etp hub`; the embedded amqtt broker is its child process,
or an external broker) so its CPU and RSS are its own; the CPython battery simulator
(hub/sim: the firmware core) runs in this process on a few shared MQTT connections. Numbers
come from the hub's /api/v1/status before and after the measured window, and from its
database after it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import psutil

from hub.tools.ports import free_port
from hub.tools.sim import SimConfig, SimFleet

__all__ = ["BenchConfig", "BenchError", "bench_fleet", "format_table", "run_bench"]

MOSQUITTO_BIN = "/usr/sbin/mosquitto"


class BenchError(RuntimeError):
    """The benchmark could not set up or run its hub / broker."""


@dataclass
class BenchConfig:
    """What to drive the hub with."""

    batteries: int = 1000
    aggregators: int = 10
    duration_s: float = 20.0
    auctions_per_s: int = 0  # 0 = every battery auctions every `auction_interval_ms`
    auction_interval_ms: int = 1000
    broker: Literal["embedded", "mosquitto"] = "embedded"
    mqtt_url: str | None = None
    connections: int = 1
    status_ms: int = 5000
    mechanism: str = "ascending"
    warmup_s: float = 3.0
    max_parallel_auctions: int = 1000


async def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise BenchError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")
            await asyncio.sleep(0.1)


def hub_status(http_port: int, api_key: str, timeout_s: float = 10) -> dict[str, Any]:
    """A local hub's /api/v1/status (raises OSError while it does not answer)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/api/v1/status",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


async def _status(http_port: int, api_key: str) -> dict[str, Any]:
    return await asyncio.to_thread(hub_status, http_port, api_key)


async def viewer_key(database_url: str, name: str = "bench") -> str:
    """A viewer key for a bench's own hub, made in its store before the hub starts (which
    also migrates it): whoever can write the hub's database is trusted to, as `etp apikey
    create` is."""
    from hub.auth import Role, issue_api_key
    from hub.store import Store

    async with Store(database_url) as store:
        return (await issue_api_key(store, name, Role.VIEWER)).key


async def _wait_ready(
    http_port: int, api_key: str, process: asyncio.subprocess.Process, timeout_s: float
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise BenchError(f"hub exited with code {process.returncode} while starting")
        with contextlib.suppress(Exception):
            if (await _status(http_port, api_key)).get("ready"):
                return
        await asyncio.sleep(0.2)
    raise BenchError(f"hub not ready after {timeout_s:.0f} s")


@contextlib.asynccontextmanager
async def _mosquitto(workdir: Path) -> Any:
    if not Path(MOSQUITTO_BIN).exists():
        raise BenchError(f"{MOSQUITTO_BIN} is not installed (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        "max_inflight_messages 0\nmax_queued_messages 100000\nset_tcp_nodelay true\n"
    )
    process = await asyncio.create_subprocess_exec(
        MOSQUITTO_BIN,
        "-c",
        str(conf),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        await _wait_port(port, 10)
        yield f"mqtt://127.0.0.1:{port}", process.pid
    finally:
        if process.returncode is None:
            process.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 5)
            if process.returncode is None:
                process.kill()
                await process.wait()


def bench_fleet(
    mqtt_url: str, site: str, master: bytes, count: int, status_ms: int, connections: int = 1
) -> SimFleet:
    """The benches' simulated fleet: packs large and slow to empty (the aggregators and the
    batteries keep trading for the whole run), status every `status_ms`."""
    return SimFleet(
        SimConfig(
            mqtt_url=mqtt_url,
            site=site,
            master_secret=master,
            count=count,
            connections=connections,
            # A core publishes status when a tick finds it due: tick at least twice per
            # period, or a 100 ms period would come out near 200 ms.
            tick_ms=max(20, min(100, status_ms // 2)),
            overrides={"status_interval_ms": status_ms, "delivery_s": 36000, "floor_wh": 0},
            capacity_wh=(400_000, 800_000),
        )
    )


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


async def run_bench(config: BenchConfig) -> dict[str, Any]:
    """Run one measurement and return its numbers (JSON-ready)."""
    workdir = Path(tempfile.mkdtemp(prefix="etp-bench-hub-"))
    try:
        async with contextlib.AsyncExitStack() as stack:
            mqtt_url = config.mqtt_url
            broker_pid = None
            if mqtt_url is None and config.broker == "mosquitto":
                mqtt_url, broker_pid = await stack.enter_async_context(_mosquitto(workdir))
            return await _run(config, workdir, mqtt_url, broker_pid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _run(
    config: BenchConfig, workdir: Path, mqtt_url: str | None, broker_pid: int | None
) -> dict[str, Any]:
    from hub.settings import load_master_secret

    http_port = free_port()
    mqtt_port = free_port()
    interval_ms = config.auction_interval_ms
    if config.auctions_per_s > 0:
        interval_ms = max(10, config.batteries * 1000 // config.auctions_per_s)
    env = dict(os.environ)
    env.update(
        {
            "ETP_DATA_DIR": str(workdir / "data"),
            "ETP_HTTP_PORT": str(http_port),
            "ETP_MQTT_PORT": str(mqtt_port),
            "ETP_AGGREGATORS": str(config.aggregators),
            "ETP_AUCTION_INTERVAL_MS": str(interval_ms),
            "ETP_STATUS_PERIOD_MS": str(config.status_ms),
            "ETP_MECHANISM": config.mechanism,
            "ETP_MAX_PARALLEL_AUCTIONS": str(config.max_parallel_auctions),
            "ETP_LOG_LEVEL": "warning",
            # the trading path is what this measures; settlement has `etp bench settle`
            "ETP_SETTLEMENT_NETWORK": "off",
        }
    )
    env.pop("ETP_DATABASE_URL", None)
    if mqtt_url:
        env["ETP_MQTT_URL"] = mqtt_url
    else:
        env.pop("ETP_MQTT_URL", None)
    # The aggregators must keep buying for the whole run: large requirements and budgets.
    env["ETP_AGGREGATOR_DEMAND_SCALE"] = "1000"
    master = load_master_secret(workdir / "data" / "master.key")
    from hub.store import database_url_for

    api_key = await viewer_key(database_url_for(workdir / "data"))
    log_path = workdir / "hub.log"
    with open(log_path, "wb") as log_file:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub.cli.main",
            "hub",
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    fleet: SimFleet | None = None
    try:
        await _wait_ready(http_port, api_key, process, 30)
        url = mqtt_url or f"mqtt://127.0.0.1:{mqtt_port}"
        fleet = bench_fleet(url, "site1", master, config.batteries, config.status_ms,
                            connections=config.connections)
        await fleet.start()
        gc.collect()
        gc.freeze()  # the fleet's long-lived objects: no full GC passes stalling the loop
        await asyncio.sleep(config.warmup_s)
        fleet.lag_samples.clear()
        hub_proc = psutil.Process(process.pid)
        broker_proc = psutil.Process(broker_pid) if broker_pid else None
        if broker_proc is None and not mqtt_url:
            children = hub_proc.children()  # the embedded broker runs as the hub's child
            broker_proc = children[0] if children else None
        cpu_before = hub_proc.cpu_times()
        sim_proc = psutil.Process()
        sim_cpu_before = sim_proc.cpu_times()
        machine_before = psutil.cpu_times()
        broker_cpu_before = broker_proc.cpu_times() if broker_proc else None
        before = await _status(http_port, api_key)
        sim_pub_before, sim_recv_before = fleet.published, fleet.received
        started = time.monotonic()
        await asyncio.sleep(config.duration_s)
        elapsed = time.monotonic() - started
        after = await _status(http_port, api_key)
        cpu_after = hub_proc.cpu_times()
        sim_cpu_after = sim_proc.cpu_times()
        machine_after = psutil.cpu_times()
        rss = hub_proc.memory_info().rss
        broker_cpu = None
        if broker_proc is not None and broker_cpu_before is not None:
            now = broker_proc.cpu_times()
            broker_cpu = (
                now.user + now.system - broker_cpu_before.user - broker_cpu_before.system
            ) / elapsed
        sim_published = fleet.published - sim_pub_before
        lags = sorted(fleet.lag_samples) or [0.0]
        sim_lag = {
            "p50_ms": round(lags[len(lags) // 2], 1),
            "p99_ms": round(lags[min(len(lags) - 1, int(len(lags) * 0.99))], 1),
            "max_ms": round(lags[-1], 1),
        }
        sim_received = fleet.received - sim_recv_before
    except BaseException:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if fleet is not None:
            await fleet.stop()
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        sys.stderr.write(tail)
        raise
    # stop the hub cleanly, then the fleet, then compare trades with the batteries' audits
    fleet.expect_disconnect = True
    loop = asyncio.get_running_loop()

    def _quiet_teardown(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # the broker goes away under the simulator's sockets: paho may still ask the loop to
        # watch a socket that was just closed (EBADF); that is expected here, not an error
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno == errno.EBADF:
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(_quiet_teardown)
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)  # paho: "connection reset" on teardown
    process.send_signal(signal.SIGINT)
    try:
        await asyncio.wait_for(process.wait(), 30)
    except TimeoutError:
        process.kill()
        await process.wait()
    await asyncio.sleep(0.3)
    await fleet.stop()
    from hub.store import database_url_for

    trades = compare_trades(
        await hub_trades(database_url_for(workdir / "data")), fleet.committed_trades()
    )

    metrics_after, metrics_before = after["metrics"], before["metrics"]
    msg_in = sum(_delta(metrics_after["messages_in"], metrics_before["messages_in"]).values())
    msg_out = sum(_delta(metrics_after["messages_out"], metrics_before["messages_out"]).values())
    cpu = (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system) / elapsed
    market_after, market_before = after["market"], before["market"]
    busy = (sum(machine_after) - machine_after.idle - getattr(machine_after, "iowait", 0.0)) - (
        sum(machine_before) - machine_before.idle - getattr(machine_before, "iowait", 0.0)
    )
    sim_cpu = (
        sim_cpu_after.user + sim_cpu_after.system - sim_cpu_before.user - sim_cpu_before.system
    ) / elapsed
    ours = cpu + (broker_cpu or 0.0) + sim_cpu
    misses = sum(metrics_after["deadline_misses"].values()) - sum(
        metrics_before["deadline_misses"].values()
    )
    timeouts = sum(metrics_after["timeouts"].values()) - sum(metrics_before["timeouts"].values())
    return {
        "config": asdict(config) | {"auction_interval_ms": interval_ms},
        "broker": "external" if config.mqtt_url else config.broker,
        "elapsed_s": round(elapsed, 2),
        "batteries_online": after["devices"]["online"],
        "authenticated_msg_per_s": round((msg_in + msg_out) / elapsed),
        "hub_in_per_s": round(msg_in / elapsed),
        "hub_out_per_s": round(msg_out / elapsed),
        "broker_msg_per_s": round((sim_published + sim_received) / elapsed),
        "sim_published_per_s": round(sim_published / elapsed),
        "sim_received_per_s": round(sim_received / elapsed),
        "auctions_per_s": round(
            (market_after["auctions_opened"] - market_before["auctions_opened"]) / elapsed, 1
        ),
        "trades_per_s": round((market_after["trades"] - market_before["trades"]) / elapsed, 1),
        "latency_ms": metrics_after["latency_ms"],
        "hub_loop_lag_ms": metrics_after.get("loop_lag_ms"),
        "store_wait_ms": metrics_after.get("store_ms"),
        "sim_loop_lag_ms": sim_lag,
        "deadline_misses": misses,
        "timeouts_lost_responses": timeouts,
        "hub_cpu_cores": round(cpu, 2),
        "broker_cpu_cores": None if broker_cpu is None else round(broker_cpu, 2),
        "hub_rss_mb": round(rss / 1e6, 1),
        "sim_cpu_cores": round(sim_cpu, 2),
        # CPU used on this machine by anything else during the window (noise in the numbers)
        "other_cpu_cores": round(max(0.0, busy / elapsed - ours), 2),
        "hub_dropped_status_frames": after["mqtt"].get("dropped_status", 0),
        "hub_dropped_trade_path_frames": after["mqtt"].get("dropped_trade_path", 0),
        **trades,
    }


async def hub_trades(database_url: str) -> dict[int, tuple[int, int, int, int]]:
    """auction id -> (device, bidder, price, energy) of trades the hub counts (verified)."""
    from hub.store import Store

    async with Store(database_url) as store:
        return {
            trade.auction_id: (trade.device_id, trade.bidder_id, trade.price_mc, trade.energy_wh)
            for trade in await store.list_trades(status="verified")
        }


def compare_trades(
    stored: dict[int, tuple[int, int, int, int]], committed: dict[int, tuple[int, int, int, int]]
) -> dict[str, int]:
    """The hub's verified trades against the batteries' own audit trails (each by auction)."""
    return {
        "trades_recorded": len(stored),
        "trades_committed_by_batteries": len(committed),
        # a battery committed it, the hub does not count it: an accepted trade lost
        "lost_accepted_trades": len(set(committed) - set(stored)),
        "trades_not_committed_by_batteries": len(set(stored) - set(committed)),
        "mismatched_trades": sum(1 for auc in set(stored) & set(committed)
                                 if stored[auc] != committed[auc]),
    }


def format_table(result: dict[str, Any]) -> str:
    """Human-readable table of one run."""
    cfg = result["config"]
    lines = [
        f"etp bench hub — {cfg['batteries']} batteries, {cfg['aggregators']} aggregators, "
        f"broker {result['broker']}, {result['elapsed_s']} s measured",
        "",
        f"{'authenticated msg/s (hub in+out)':<36}{result['authenticated_msg_per_s']:>10}",
        f"{'  hub in / out msg/s':<36}{result['hub_in_per_s']:>10} / {result['hub_out_per_s']}",
        f"{'broker msg/s (batteries in+out)':<36}{result['broker_msg_per_s']:>10}",
        f"{'auctions/s':<36}{result['auctions_per_s']:>10}",
        f"{'trades/s':<36}{result['trades_per_s']:>10}",
        f"{'deadline misses':<36}{result['deadline_misses']:>10}",
        f"{'lost responses (timeouts)':<36}{result['timeouts_lost_responses']:>10}",
        f"{'lost accepted trades':<36}{result['lost_accepted_trades']:>10}",
        f"{'trades not committed by a battery':<36}"
        f"{result['trades_not_committed_by_batteries']:>10}",
        f"{'hub CPU (cores)':<36}{result['hub_cpu_cores']:>10}",
        f"{'hub RSS (MB)':<36}{result['hub_rss_mb']:>10}",
        f"{'simulated fleet CPU (cores)':<36}{result.get('sim_cpu_cores'):>10}",
        f"{'other processes CPU (cores)':<36}{result.get('other_cpu_cores'):>10}",
    ]
    if result.get("broker_cpu_cores") is not None:
        label = f"{result['broker']} broker CPU (cores)"
        lines.append(f"{label:<36}{result['broker_cpu_cores']:>10}")
    lines.append(
        f"{'hub dropped frames status / trade':<36}"
        f"{result.get('hub_dropped_status_frames', 0):>10} / "
        f"{result.get('hub_dropped_trade_path_frames', 0)}"
    )
    lines += [
        "",
        f"{'request':<14}{'count':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}",
    ]
    for name, hist in result["latency_ms"].items():
        lines.append(
            f"{name:<14}{hist['count']:>9}{hist['p50_ms'] or 0:>10.2f}"
            f"{hist['p99_ms'] or 0:>10.2f}{hist['max_ms']:>10.2f}"
        )
    store = result.get("store_wait_ms") or {}
    if store:
        lines += ["", f"{'store wait':<14}{'count':>9}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"]
        for name, hist in store.items():
            lines.append(
                f"{name:<14}{hist['count']:>9}{hist['p50_ms'] or 0:>10.2f}"
                f"{hist['p99_ms'] or 0:>10.2f}{hist['max_ms']:>10.2f}"
            )
    hub_lag, sim_lag = result.get("hub_loop_lag_ms"), result.get("sim_loop_lag_ms")
    if hub_lag and sim_lag:
        lines += [
            "",
            f"event-loop lag p99/max ms: hub {hub_lag['p99_ms']}/{hub_lag['max_ms']}, "
            f"simulator {sim_lag['p99_ms']}/{sim_lag['max_ms']}",
        ]
    return "\n".join(lines)
