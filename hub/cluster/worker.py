"""A hub worker's part in a site shared with others: the glue between HubRuntime and the
cluster (hub.cluster.membership leases, hub.cluster.shares budgets).

- Frames of batteries this worker does not own are dropped before they are verified, except
  births: verified and kept, so that a battery taken over is known at once (its birth fed to
  the runtime as a retained one, then a probe shows it alive).
- A battery taken over: auctions and trades its last owner left open are recovered from the
  store (as a restarting hub does), the senders to it restart at a newer epoch, then it trades.
- A battery handed over: its auction ends here, it leaves this worker's registry quietly.
- The leader (one per site) runs the singletons: settlement, alerts, audit of table changes,
  site-wide period and aggregator events.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import structlog

from hub.cluster.membership import Cluster, ClusterConfig, new_worker_id
from hub.cluster.shares import AggregatorShares
from shared_etp.errors import ProtocolError
from shared_etp.topics import BIRTH, device_topic

if TYPE_CHECKING:
    from hub.runtime import HubRuntime

__all__ = ["WorkerGlue"]

log = structlog.get_logger(__name__)


class WorkerGlue:
    """Built by HubRuntime.start() when ETP_WORKER is set, after the auction driver."""

    def __init__(self, runtime: HubRuntime) -> None:
        settings = runtime.settings
        assert runtime.store is not None and runtime.auctions is not None
        self.runtime = runtime
        self.worker_id = settings.worker_id or new_worker_id()
        self.births: dict[int, bytes] = {}  # verified birth frames of batteries seen
        self.cluster = Cluster(
            ClusterConfig(
                site=settings.site,
                worker_id=self.worker_id,
                lease_ms=settings.worker_lease_ms,
                renew_ms=settings.worker_renew_ms,
                margin_ms=min(1000, settings.worker_lease_ms // 4),
                http_url=runtime.http_url if settings.http_enabled else None,
            ),
            runtime.store,
            on_acquire=self._acquire,
            on_release=self._release,
            on_leader=self._lead,
            busy=lambda device_id: device_id in runtime.auctions.runs,  # type: ignore[union-attr]
        )
        self.shares = AggregatorShares(
            runtime.store, settings.site, self.worker_id, runtime.auctions.buyers,
            settings.trading_period_ms,
        )
        runtime.auctions.on_new_period = self.shares.new_period
        runtime.auctions.controls.draining = self.cluster.draining  # the scheduler skips them
        runtime.auctions.leads = False
        self._jobs: set[asyncio.Task[None]] = set()
        self._leading = asyncio.Lock()

    async def start(self) -> None:
        await self.shares.start()
        await self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()
        await self.shares.stop()
        for job in list(self._jobs):
            await asyncio.gather(job, return_exceptions=True)

    def status(self) -> dict[str, Any]:
        return self.cluster.status() | {"share_syncs": self.shares.syncs}

    # ---- frames ----------------------------------------------------------------------------

    def admit(self, device_id: int, leaf: str, payload: bytes) -> bool:
        """True when the runtime should handle this frame (its battery is ours)."""
        if self.cluster.owns(device_id):
            return True
        if leaf == BIRTH:
            keyring = self.runtime.keyring
            assert keyring is not None
            try:
                msg, _generation = keyring.verify(payload)
            except ProtocolError:
                return False  # refused (and counted) by the owner, who verifies it too
            if msg.get("src") == device_id:
                self.births[device_id] = payload
                self.cluster.known.add(device_id)
        return False

    # ---- ownership -------------------------------------------------------------------------

    def _job(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _acquire(self, devices: set[int]) -> None:
        runtime = self.runtime
        assert runtime.senders is not None
        runtime.senders.restart(devices, int(time.time()))
        self._job(self._take_over(set(devices)), "worker-take-over")

    async def _take_over(self, devices: set[int]) -> None:
        runtime = self.runtime
        assert runtime.auctions is not None
        try:
            await runtime.auctions.recover(devices)
        except Exception as exc:  # the store away: the reconciler's questions come later
            log.error("auctions of batteries taken over not recovered", error=str(exc),
                      devices=len(devices))
        site = runtime.settings.site
        for device_id in sorted(devices):
            if not self.cluster.owns(device_id):
                continue  # moved on meanwhile
            birth = self.births.get(device_id)
            if birth is not None:
                runtime.on_message(device_topic(site, device_id, BIRTH), birth)
            runtime.auctions.probe(device_id)  # alive? its answer puts it online at once

    def _release(self, devices: set[int]) -> None:
        runtime = self.runtime
        if runtime.auctions is not None:
            runtime.auctions.release(devices)
        if runtime.registry is not None:
            for device_id in devices:
                runtime.registry.devices.pop(device_id, None)

    def _lead(self, leading: bool) -> None:
        runtime = self.runtime
        if runtime.auctions is not None:
            runtime.auctions.leads = leading
        if runtime.security_audit is not None:
            runtime.security_audit.lead(leading)
        log.info("site leader" if leading else "no longer the site's leader",
                 worker=self.worker_id)
        self._job(self._singletons(leading), "worker-singletons")

    async def _singletons(self, leading: bool) -> None:
        async with self._leading:
            if leading:
                await self.runtime.start_singletons()
            else:
                await self.runtime.stop_singletons()
