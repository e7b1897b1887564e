"""The hub as a child process (`etp hub`, killable with SIGKILL) for crash and fault tests."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hub.store import database_url_for
from tests.brokers import free_port
from tests.hub.helpers import make_api_key

REPO = Path(__file__).resolve().parents[2]


class HubProcess:
    """`etp hub` as a child process with its SQLite store in `data_dir` and its log (stdout and
    stderr, every life of the process appended) in `data_dir/hub.log`. A viewer API key for its
    gateway is made in that store before the first start (as `etp apikey create` would)."""

    def __init__(self, data_dir: Path, mqtt_url: str, **env: str) -> None:
        self.http_port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "ETP_DATA_DIR": str(data_dir), "ETP_MQTT_URL": mqtt_url,
            "ETP_HTTP_PORT": str(self.http_port), "ETP_AUCTION_INTERVAL_MS": "100",
            "ETP_ROUND_MS": "40", "ETP_LOG_LEVEL": "warning",
        })
        self.env.update(env)
        self.env.pop("ETP_DATABASE_URL", None)
        self.log = data_dir / "hub.log"
        self.api_key = make_api_key(database_url_for(data_dir), name="hub-process")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        """True while the child process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process without waiting for it (it serves HTTP before it reaches its
        broker)."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub.cli.main", "hub"], cwd=REPO, env=self.env,
                stdout=log, stderr=log,
            )

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start the process and wait until it says it is ready (connected to its broker)."""
        self.spawn()
        await self.wait_ready(timeout_s)

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Poll /api/v1/status (off the event loop) until the hub is ready."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await asyncio.to_thread(self.ready):
            if loop.time() > deadline:
                raise AssertionError(f"hub not ready after {timeout_s} s")
            await asyncio.sleep(0.1)

    def status(self) -> dict[str, Any]:
        """/api/v1/status, or {} while the hub does not answer."""
        try:
            request = urllib.request.Request(
                f"http://127.0.0.1:{self.http_port}/api/v1/status",
                headers={"Authorization": f"Bearer {self.api_key}"},
            )
            with urllib.request.urlopen(request, timeout=2) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except OSError:
            return {}

    def ready(self) -> bool:
        """True once the hub answers that it is ready; fails if the process exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"hub exited {self.proc.returncode}: {self.log.read_text()}")
        return bool(self.status().get("ready"))

    def market(self) -> dict[str, Any]:
        """The status' market part, or {} while the hub does not answer."""
        return self.status().get("market", {})  # type: ignore[no-any-return]

    async def kill(self, sig: int) -> None:
        """Signal the hub and wait for it without blocking the event loop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            await asyncio.to_thread(self.proc.wait, 30)

    async def wait_market(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        """Poll /api/v1/status off the event loop until predicate(market); returns it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not predicate(market := await asyncio.to_thread(self.market)):
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
            await asyncio.sleep(0.05)
        return market


def trades_at_least(count: int) -> Callable[[dict[str, Any]], bool]:
    """A wait_market predicate: the hub counts at least `count` trades (this life of it)."""
    return lambda market: int(market.get("trades", 0)) >= count
