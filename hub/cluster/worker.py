"""A hub worker's part in a site shared with others: the glue between HubRuntime and the
cluster (hub.cluster.membership leases, hub.cluster.shares budgets).

- A worker subscribes to every battery's birth (retained) and to the other topics (status,
  responses, will) of the batteries it owns only, so the broker sends each frame to its owner
  alone. Births of batteries it does not own are verified and kept, so that a battery taken
  over is known at once (its birth fed to the runtime as a retained one, then a probe shows it
  alive); any other frame of a battery it does not own (in flight at a handover) is dropped
  before it is verified.
- A battery taken over: auctions and trades its last owner left open are recovered from the
  store (as a restarting hub does), the senders to it restart at a newer epoch, then it trades.
- A battery handed over: its auction ends here, it leaves this worker's registry quietly.
- The leader (one per site) runs the singletons: settlement, alerts, audit of table changes,
  site-wide period and aggregator events.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import structlog

from hub.auctions.control import ControlError
from hub.cluster.membership import Cluster, ClusterConfig
from hub.cluster.shares import AggregatorShares
from hub.events import Event, EventKind
from shared_etp.compat import now_ms
from shared_etp.errors import ProtocolError
from shared_etp.topics import BIRTH, DEATH, RESPONSE, STATUS, device_topic

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
        assert settings.worker_id is not None  # the runtime names the worker (its MQTT id)
        self.worker_id = settings.worker_id
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
            healthy=lambda: runtime.link is not None and runtime.link.connected.is_set(),
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
        # the site's batteries as the store has them (every worker's), with their owners:
        # what this worker's gateway lists beside its own live ones
        self.site_devices: dict[int, dict[str, Any]] = {}
        self._site_task: asyncio.Task[None] | None = None
        self._controls_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.shares.start()
        await self.cluster.start()
        self._site_task = asyncio.create_task(self._read_site(), name="worker-site-devices")
        self._controls_task = asyncio.create_task(self._follow_controls(), name="worker-controls")

    async def stop(self) -> None:
        for task in (self._site_task, self._controls_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.cluster.stop()
        await self.shares.stop()
        for job in list(self._jobs):
            await asyncio.gather(job, return_exceptions=True)

    async def _follow_controls(self) -> None:
        """Operators' commands given at any worker's gateway apply at every worker: each is an
        operator_action event, applied again here (idempotent) as a restart replays them."""
        runtime = self.runtime
        assert runtime.events is not None and runtime.auctions is not None
        operator = runtime.auctions.operator
        with runtime.events.subscribe([EventKind.OPERATOR_ACTION]) as subscription:
            async for item in subscription:
                if not isinstance(item, Event):
                    continue  # Lagged: controls are few; a lag here is not expected
                payload = item.payload
                try:
                    operator.restore(str(payload.get("action")), item.device_id,
                                     payload.get("by") or {}, payload.get("params") or {},
                                     item.ts_ms)
                except (ControlError, TypeError, ValueError) as exc:
                    log.warning("operator action from another worker not applied",
                                seq=item.seq, error=str(exc))

    async def _read_site(self, interval_s: float = 2.0) -> None:
        store, site = self.runtime.store, self.runtime.settings.site
        assert store is not None
        while True:
            try:
                owners = await store.lease_owners(site, now_ms())
                self.site_devices = {
                    row.device_id: {
                        **{k: v for k, v in asdict(row).items()
                           if k not in ("site", "first_seen_ms")},
                        "failures": None,  # counted by the owner's registry only
                        "last_seen_ms": row.last_seen_ms or None,
                        "worker": owners.get(row.device_id),
                    }
                    for row in await store.list_devices() if row.site == site
                }
            except Exception as exc:
                log.warning("the site's batteries not read (will retry)", error=str(exc))
            await asyncio.sleep(interval_s)

    def devices(self, own: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The gateway's battery list: this worker's live rows, the others' from the store."""
        rows = {row["device_id"]: row | {"worker": self.worker_id} for row in own
                if self.cluster.owns(row["device_id"])}
        for device_id, row in self.site_devices.items():
            rows.setdefault(device_id, row)
        return [rows[device_id] for device_id in sorted(rows)]

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
        assert runtime.auctions is not None and runtime.link is not None
        await runtime.link.add_subscriptions(self._topics(devices))  # before anything is asked
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

    def _topics(self, devices: set[int]) -> list[tuple[str, int]]:
        """A battery's topics its owner subscribes to (births: every worker, all batteries)."""
        site = self.runtime.settings.site
        return [(device_topic(site, device_id, leaf), 0 if leaf == STATUS else 1)
                for device_id in sorted(devices) for leaf in (DEATH, STATUS, RESPONSE)]

    def _release(self, devices: set[int]) -> None:
        runtime = self.runtime
        if runtime.link is not None:
            self._job(runtime.link.remove_subscriptions(self._topics(devices)),
                      "worker-unsubscribe")
        if runtime.auctions is not None:
            runtime.auctions.release(devices)
        if runtime.registry is not None:
            for device_id in devices:
                runtime.registry.forget(device_id)

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
