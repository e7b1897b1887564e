"""A site of N hub workers on one Mosquitto and one PostgreSQL, for `etp bench hub --workers`
and the worker tests: `etp hub --worker` child processes, each with its own gateway port and
log, that can be killed (SIGKILL) and added while the site trades."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from hub.tools.ports import free_port

__all__ = ["WorkerProcess", "WorkerSite"]

REPO = Path(__file__).resolve().parents[3]


class WorkerProcess:
    """One `etp hub --worker` child process."""

    def __init__(self, index: int, env: dict[str, str], log: Path, api_key: str) -> None:
        self.index = index
        self.http_port = free_port()
        self.env = env | {"ETP_HTTP_PORT": str(self.http_port),
                          "ETP_WORKER_ID": f"worker-{index}"}
        self.log = log
        self.api_key = api_key
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli.main", "hub", "--worker"], cwd=REPO,
                env=self.env, stdout=log, stderr=log,
            )

    def status(self) -> dict[str, Any]:
        """/api/v1/status, or {} while the worker does not answer."""
        from hub.tools.bench.hub import hub_status

        try:
            return hub_status(self.http_port, self.api_key, timeout_s=3)
        except (OSError, ValueError):
            return {}

    async def astatus(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.status)

    def kill(self) -> None:
        """kill -9: no goodbye, its leases expire."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    async def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGINT, as Ctrl-C or systemd would; returns the exit code."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc is not None else None
        proc.send_signal(signal.SIGINT)
        try:
            return await asyncio.to_thread(proc.wait, timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return await asyncio.to_thread(proc.wait, 10)


class WorkerSite:
    """The workers of one site: shared broker URL, database URL and data dir (master key)."""

    def __init__(self, workdir: Path, mqtt_url: str, database_url: str, **env: str) -> None:
        self.workdir = workdir
        self.database_url = database_url
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ) | {
            "ETP_DATA_DIR": str(self.data_dir),
            "ETP_MQTT_URL": mqtt_url,
            "ETP_DATABASE_URL": database_url,
            "ETP_LOG_LEVEL": "info",
            "PYTHONPATH": str(REPO),
        }
        self.env.update(env)
        self.workers: list[WorkerProcess] = []
        self.api_key = ""

    async def prepare(self) -> None:
        """Migrate the database (as `etp db upgrade` before the workers start) and make the
        viewer key the site's status reads use."""
        from hub.tools.bench.hub import viewer_key

        self.api_key = await viewer_key(self.database_url, "worker-site")

    def add(self) -> WorkerProcess:
        index = len(self.workers)
        worker = WorkerProcess(index, self.env, self.workdir / f"worker-{index}.log",
                               self.api_key)
        self.workers.append(worker)
        worker.spawn()
        return worker

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until every running worker says it is ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for worker in self.workers:
            while worker.running and not (await worker.astatus()).get("ready"):
                if loop.time() > deadline:
                    raise TimeoutError(f"worker {worker.index} not ready: {self.tail(worker)}")
                await asyncio.sleep(0.2)
            if not worker.running:
                raise RuntimeError(f"worker {worker.index} exited: {self.tail(worker)}")

    def tail(self, worker: WorkerProcess, chars: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return worker.log.read_text(errors="replace")[-chars:]
        return ""

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.workers))
