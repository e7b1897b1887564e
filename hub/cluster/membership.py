"""Which worker owns which battery: heartbeats and leases in the site's database.

Every `renew_ms` a worker writes its heartbeat, reads the live workers (heartbeat within
`lease_ms`) and computes, for every battery it knows (verified births seen on the broker, which
every worker subscribes to), the battery's owner among the live workers by rendezvous hashing:
the same answer on every worker, and a worker joining or leaving moves only its share. It then
takes or renews the leases of its batteries in one conditional statement (a lease is taken only
if it is free, expired or its own: hub.store.cluster), and gives up, at once, the leases of
batteries that hash to another live worker and have no auction in flight.

A worker treats a lease as its own only until `lease_ms - margin_ms` after the renewal that
took it, so when it stalls or loses the database it stops trading before another worker can
take over; a worker killed with -9 loses its batteries after at most `lease_ms` plus one renewal.
The site's singletons (settlement, alerts, the audit of key and device changes) run on the
holder of the lease on the pseudo-battery LEADER, chosen by the same rule.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from hub.store import Store
from shared_etp.compat import now_ms

__all__ = ["LEADER", "Cluster", "ClusterConfig", "owner_of"]

log = structlog.get_logger(__name__)

LEADER = -1  # the lease whose holder runs the site's singletons


def owner_of(device_id: int, workers: Iterable[str]) -> str | None:
    """The worker a battery belongs to among `workers` (rendezvous hashing), None if none."""
    best, best_score = None, b""
    for worker in workers:
        score = hashlib.blake2b(f"{worker}/{device_id}".encode(), digest_size=8).digest()
        if best is None or score > best_score:
            best, best_score = worker, score
    return best


def new_worker_id() -> str:
    """host-pid-random: unique per process, readable in `etp` status and logs."""
    return f"{socket.gethostname()[:32]}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass(frozen=True)
class ClusterConfig:
    site: str
    worker_id: str
    lease_ms: int = 4000
    renew_ms: int = 1000
    margin_ms: int = 1000
    http_url: str | None = None


class Cluster:
    """This worker's view of the site's workers and of the batteries it owns."""

    def __init__(
        self,
        config: ClusterConfig,
        store: Store,
        *,
        on_acquire: Callable[[set[int]], None],
        on_release: Callable[[set[int]], None],
        on_leader: Callable[[bool], None],
        busy: Callable[[int], bool],
        healthy: Callable[[], bool] = lambda: True,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        if not config.margin_ms < config.lease_ms or config.renew_ms >= config.lease_ms:
            raise ValueError("cluster: need renew_ms < lease_ms and margin_ms < lease_ms")
        self.config = config
        self.store = store
        self.on_acquire = on_acquire
        self.on_release = on_release
        self.on_leader = on_leader
        self.busy = busy
        self.healthy = healthy  # False (e.g. the broker out of reach): leases left to expire
        self.clock = clock
        self.known: set[int] = set()  # batteries whose verified birth this worker saw
        self.owned: set[int] = set()
        self.draining: set[int] = set()  # ours, wanted elsewhere, an auction still running
        self.leader = False
        self.workers: list[str] = []
        self.urls: dict[str, str | None] = {}  # live workers' gateways
        self.acquired = 0  # leases taken (at start, from a dead worker, handed over)
        self.released = 0  # leases given up or lost
        self._valid_until = 0
        self._started_ms = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def owns(self, device_id: int) -> bool:
        """True while this worker holds a lease on the battery it may still trust."""
        return device_id in self.owned and self.clock() < self._valid_until

    async def start(self) -> None:
        """Join the site (heartbeat) and take this worker's batteries once."""
        self._started_ms = self.clock()
        await self.tick()
        self._task = asyncio.create_task(self._run(), name="cluster-membership")
        log.info("worker joined the site", worker=self.worker_id, site=self.config.site,
                 workers=len(self.workers), leader=self.leader)

    async def stop(self) -> None:
        """Leave: the leases go at once, so the others take the batteries at their next
        renewal rather than after the lease time."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        released = set(self.owned)
        self.owned.clear()
        self._valid_until = 0
        if released:
            self.on_release(released)
        if self.leader:
            self.leader = False
            self.on_leader(False)
        try:
            await self.store.drop_worker(self.worker_id)
        except Exception as exc:  # the database is away: the leases expire by themselves
            log.warning("could not leave the site cleanly; leases expire", error=str(exc))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.config.renew_ms / 1000)
            try:
                await self.tick()
            except Exception as exc:
                log.warning("lease renewal failed (trading stops at lease expiry)",
                            error=str(exc))
                if self.clock() >= self._valid_until and (self.owned or self.leader):
                    self._lose(set(self.owned), leader=self.leader)

    def _lose(self, devices: set[int], *, leader: bool) -> None:
        self.owned -= devices
        if devices:
            self.on_release(devices)
        if leader and self.leader:
            self.leader = False
            self.on_leader(False)

    async def tick(self) -> None:
        """One renewal: heartbeat, live workers, leases taken, renewed, handed over."""
        config = self.config
        started = self.clock()
        if not self.healthy():
            # cannot reach its batteries: no heartbeat, no renewal, so the others take them
            # when the leases expire (it stops trusting them a margin before)
            if started >= self._valid_until and (self.owned or self.leader):
                log.warning("worker cannot trade: its batteries go to the others",
                            worker=config.worker_id, owned=len(self.owned))
                self._lose(set(self.owned), leader=self.leader)
            return
        await self.store.worker_heartbeat(
            config.worker_id, config.site, started_ms=self._started_ms, now_ms=started,
            http_url=config.http_url,
        )
        live = await self.store.live_workers(config.site, started - config.lease_ms)
        self.workers = [worker for worker, _ in live]
        self.urls = dict(live)
        if config.worker_id not in self.workers:
            self.workers.append(config.worker_id)
        me = config.worker_id
        wanted = {d for d in self.known | self.owned | {LEADER}
                  if owner_of(d, self.workers) == me}
        unwanted = self.owned - wanted
        handover = {d for d in unwanted if not self.busy(d)}
        self.draining.clear()
        self.draining.update(unwanted - handover)  # no new auction: handed over next time
        if self.leader and LEADER not in wanted:
            handover.add(LEADER)
        claim = (wanted | self.owned | ({LEADER} if self.leader else set())) - handover
        held = await self.store.claim_leases(
            config.site, me, claim, now_ms=started, expires_ms=started + config.lease_ms
        )
        if handover:
            await self.store.release_leases(config.site, me, handover)
        self._valid_until = started + config.lease_ms - config.margin_ms
        leader = LEADER in held
        held.discard(LEADER)
        gone = self.owned - held
        new = held - self.owned
        self.owned = held
        if gone:
            self.released += len(gone)
            self.on_release(gone)
        if new:
            self.acquired += len(new)
            self.on_acquire(new)
        if leader != self.leader:
            self.leader = leader
            self.on_leader(leader)
        if gone or new:
            log.info("batteries moved", worker=me, acquired=len(new), released=len(gone),
                     owned=len(self.owned), workers=len(self.workers))

    def leader_url(self) -> str | None:
        """The gateway of the worker that should lead now (the one that holds the lease but
        for a moment after a change)."""
        leader = owner_of(LEADER, self.workers)
        return self.urls.get(leader) if leader is not None else None

    def status(self) -> dict[str, object]:
        """For /api/v1/status: this worker, the live workers, what it owns."""
        return {
            "worker": self.worker_id,
            "workers": list(self.workers),
            "leader": self.leader,
            "batteries_owned": len(self.owned),
            "batteries_known": len(self.known),
            "acquired": self.acquired,
            "released": self.released,
        }
