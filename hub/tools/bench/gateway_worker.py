"""WebSocket clients of `etp bench gateway`, run as a process of their own (several in a run).

Usage: python -m hub.tools.bench.gateway_worker '<json config>'

Each client authenticates (every other one with a ticket from `POST /api/v1/ws-ticket`, as the
dashboard does, the others with the key on the upgrade request), takes its snapshot and then
records, for every event, its seq, its ts_ms and the wall-clock time it arrived. A client
told to resync, or closed, reconnects with the last seq it saw (as the dashboard does).

Protocol with the benchmark, one JSON object per line: the worker prints {"ready": ...} once
every client has its snapshot; then it reads one line {"window_ms": [start, end],
"through_seq": S, "wait_s": W}, waits up to W seconds for every client to have seq S, prints
its figures for the events whose ts_ms is in [start, end) and exits. It also exits on its own
at `deadline_s`, or when its standard input closes (the benchmark went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

__all__ = ["ClientLog", "window_figures"]

# Latencies are kept in buckets of 0.1 ms (exact enough for p50/p99; the max is kept exact).
BUCKETS_PER_MS = 10


@dataclass
class ClientLog:
    """What one client saw: every event's seq, ts_ms and arrival (µs since the epoch)."""

    seqs: array[int] = field(default_factory=lambda: array("q"))
    emitted_ms: array[int] = field(default_factory=lambda: array("q"))
    received_us: array[int] = field(default_factory=lambda: array("q"))
    snapshots: int = 0
    resyncs: int = 0
    reconnects: int = 0
    last_seq: int | None = None
    failure: str | None = None


def window_figures(logs: list[ClientLog], start_ms: int, end_ms: int) -> dict[str, Any]:
    """Per client, the seqs of events with ts_ms in [start_ms, end_ms) (first, last, count,
    duplicates); the latency histogram of those deliveries (0.1 ms buckets); per second of
    the window, deliveries, their summed and their largest latency; the ten events (seq,
    latency) that reached their last client the latest."""
    clients = []
    histogram: dict[int, int] = {}
    max_ms = 0.0
    # per second of the window (by emit time): [deliveries, sum of latencies, max latency]
    seconds: dict[int, list[float]] = {}
    slowest_by_seq: dict[int, float] = {}  # each event's largest latency over these clients
    for log in logs:
        seen: set[int] = set()
        duplicates = 0
        for seq, emitted, received in zip(log.seqs, log.emitted_ms, log.received_us, strict=True):
            if not start_ms <= emitted < end_ms:
                continue
            if seq in seen:
                duplicates += 1
                continue
            seen.add(seq)
            latency_ms = received / 1000 - emitted
            max_ms = max(max_ms, latency_ms)
            bucket = max(0, int(latency_ms * BUCKETS_PER_MS))
            histogram[bucket] = histogram.get(bucket, 0) + 1
            second = seconds.setdefault((emitted - start_ms) // 1000, [0, 0.0, 0.0])
            second[0] += 1
            second[1] += latency_ms
            second[2] = max(second[2], latency_ms)
            if latency_ms > slowest_by_seq.get(seq, -1.0):
                slowest_by_seq[seq] = latency_ms
        clients.append(
            {
                "first": min(seen) if seen else None,
                "last": max(seen) if seen else None,
                "count": len(seen),
                "duplicates": duplicates,
                "snapshots": log.snapshots,
                "resyncs": log.resyncs,
                "reconnects": log.reconnects,
                "failure": log.failure,
            }
        )
    slowest = sorted(slowest_by_seq.items(), key=lambda item: item[1], reverse=True)[:10]
    return {
        "clients": clients,
        "histogram": histogram,
        "max_ms": max_ms,
        "seconds": seconds,
        "slowest": slowest,
    }


def _ticket(http_url: str, key: str) -> str:
    request = urllib.request.Request(
        f"{http_url}/api/v1/ws-ticket", method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return str(json.loads(response.read())["ticket"])


class Worker:
    """A set of clients sharing this process's event loop."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.ws_url: str = config["ws_url"]
        self.http_url: str = config["http_url"]
        self.key: str = config["key"]
        self.first_index: int = config["first_index"]
        self.deflate: bool = config["deflate"]
        self.logs = [ClientLog() for _ in range(config["clients"])]
        self.ready = [asyncio.Event() for _ in self.logs]
        self.stopping = False

    async def _open(self, index: int, after_seq: int | None) -> ClientConnection:
        query = "" if after_seq is None else f"after_seq={after_seq}"
        headers = {}
        if (self.first_index + index) % 2 == 0:
            ticket = await asyncio.to_thread(_ticket, self.http_url, self.key)
            query = f"ticket={ticket}" + (f"&{query}" if query else "")
        else:
            headers["Authorization"] = f"Bearer {self.key}"
        url = self.ws_url + (f"?{query}" if query else "")
        return await connect(
            url,
            additional_headers=headers,
            compression="deflate" if self.deflate else None,
            max_size=2**24,
            open_timeout=60,
            ping_interval=None,  # the measurement's own traffic only
        )

    async def client(self, index: int) -> None:
        """One client: connect, read until stopped, reconnect after a resync or a close."""
        log = self.logs[index]
        while not self.stopping:
            try:
                websocket = await self._open(index, log.last_seq)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if isinstance(exc, InvalidStatus) or self.stopping:
                    log.failure = f"connect: {exc}"
                    self.ready[index].set()
                    return
                await asyncio.sleep(0.5)
                continue
            try:
                await self._read(websocket, index, log)
            except ConnectionClosed as exc:
                if exc.rcvd is not None and exc.rcvd.code not in (1000, 4409):
                    log.failure = f"closed {exc.rcvd.code}: {exc.rcvd.reason}"
                    self.ready[index].set()
                    return
            finally:
                await websocket.close()
            if not self.stopping:
                log.reconnects += 1

    async def _read(self, websocket: ClientConnection, index: int, log: ClientLog) -> None:
        seqs, emitted, received = log.seqs, log.emitted_ms, log.received_us
        async for message in websocket:
            arrived_us = time.time_ns() // 1000
            body = json.loads(message)
            kind = body.get("type")
            if kind == "event":
                seqs.append(body["seq"])
                emitted.append(body["ts_ms"])
                received.append(arrived_us)
                log.last_seq = body["seq"]
            elif kind == "snapshot":
                log.snapshots += 1
                log.last_seq = body["seq"]
                self.ready[index].set()
            elif kind == "resume":
                self.ready[index].set()
            elif kind == "resync":
                log.resyncs += 1
            if self.stopping:
                return


async def _main(config: dict[str, Any]) -> None:
    worker = Worker(config)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(config["deadline_s"])
    tasks = []
    # connect a few at a time: the hub's accept backlog is bounded, as a real site's would be
    gate = asyncio.Semaphore(25)

    async def start(index: int) -> None:
        async with gate:
            tasks.append(asyncio.create_task(worker.client(index)))
            await worker.ready[index].wait()

    await asyncio.wait_for(
        asyncio.gather(*(start(index) for index in range(len(worker.logs)))),
        max(1.0, deadline - loop.time()),
    )
    lags_ms: list[float] = []

    async def watch_lag() -> None:
        # this process's own delay: a late wake-up here delays every receive time too
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags_ms.append((loop.time() - before - 0.01) * 1000)

    watcher = asyncio.create_task(watch_lag())
    print(json.dumps({"ready": True}), flush=True)
    line = await asyncio.wait_for(
        loop.run_in_executor(None, sys.stdin.readline), max(1.0, deadline - loop.time())
    )
    request = json.loads(line) if line.strip() else {}
    # late is not lost: give every client up to wait_s to reach the window's last event
    through_seq, wait_until = request.get("through_seq"), loop.time() + request.get("wait_s", 0)
    while through_seq is not None and loop.time() < min(wait_until, deadline):
        behind = [
            log for log in worker.logs if log.failure is None and (log.last_seq or 0) < through_seq
        ]
        if not behind:
            break
        await asyncio.sleep(0.1)
    worker.stopping = True
    watcher.cancel()
    lags_ms.sort()
    report: dict[str, Any] = {
        "loop_lag_ms": {
            "p99": round(lags_ms[int(len(lags_ms) * 0.99)], 1) if lags_ms else None,
            "max": round(lags_ms[-1], 1) if lags_ms else None,
        }
    }
    if request:
        start_ms, end_ms = request["window_ms"]
        report |= window_figures(worker.logs, start_ms, end_ms)
    for task in tasks:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(report), flush=True)


def main() -> None:
    """Entry point: run the clients the JSON config in argv[1] describes."""
    config = json.loads(sys.argv[1])
    try:
        import uvloop
    except ImportError:
        asyncio.run(_main(config))
    else:
        uvloop.run(_main(config))


if __name__ == "__main__":
    main()
