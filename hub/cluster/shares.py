"""Aggregator budgets across workers: each worker stores its part of every aggregator's
trading period and adds the other workers' parts to its own (every `interval_s`).

An aggregator then sees what it spent and bought at the whole site this period, whichever
worker ran the auction: its budget and energy requirement hold across workers, up to what the
workers commit between two syncs (bounded by the auctions in flight). Trading periods follow
the wall clock in a cluster (hub.auctions.scheduler: `aligned`), so every worker's period N is
the same interval.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from hub.buyers.bidding import Buyers
from hub.store import Store
from shared_etp.compat import now_ms

__all__ = ["AggregatorShares"]

log = structlog.get_logger(__name__)

_ZERO = (0, 0, 0, 0)


class AggregatorShares:
    """Syncs spent, bought, wins and losses of the current period through the store."""

    def __init__(
        self, store: Store, site: str, worker_id: str, buyers: Buyers, period_ms: int,
        *, interval_s: float = 0.5,
    ) -> None:
        self.store = store
        self.site = site
        self.worker_id = worker_id
        self.buyers = buyers
        self.period_ms = period_ms
        self.interval_s = interval_s
        self.period = self._wall_period()
        self._applied: dict[int, tuple[int, int, int, int]] = {}  # others' parts, as added
        self._base: dict[int, tuple[int, int]] = {}  # wins, losses at the period's start
        self.syncs = 0
        self._task: asyncio.Task[None] | None = None

    def _wall_period(self) -> int:
        return now_ms() // self.period_ms if self.period_ms > 0 else 0

    def new_period(self) -> None:
        """The scheduler started a period (budgets renewed): the parts start from zero."""
        self.period = self._wall_period()
        self._applied.clear()
        self._base = {a.aggregator_id: (a.state.wins, a.state.losses)
                      for a in self.buyers.aggregators}

    async def start(self) -> None:
        self.new_period()
        self._task = asyncio.create_task(self._run(), name="aggregator-shares")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.sync()  # this worker's last part, for the others

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync()
            except Exception as exc:
                log.warning("aggregator shares not synced (will retry)", error=str(exc))

    async def sync(self) -> None:
        """Write this worker's parts; add the others' parts to every aggregator's state."""
        period = self.period
        own: dict[int, tuple[int, int, int, int]] = {}
        for agg in self.buyers.aggregators:
            state, key = agg.state, agg.aggregator_id
            applied = self._applied.get(key, _ZERO)
            base_wins, base_losses = self._base.setdefault(key, (state.wins, state.losses))
            own[key] = (
                state.spent_mc - applied[0],
                state.energy_bought_wh - applied[1],
                state.wins - base_wins - applied[2],
                state.losses - base_losses - applied[3],
            )
        await self.store.put_aggregator_shares(self.site, period, self.worker_id, own,
                                               now_ms=now_ms())
        others = await self.store.others_aggregator_shares(self.site, period, self.worker_id)
        if period != self.period:
            return  # a new period began meanwhile: these figures belong to the old one
        for agg in self.buyers.aggregators:
            # what this worker committed during the awaits stays: only the others' part moves
            state, key = agg.state, agg.aggregator_id
            before, theirs = self._applied.get(key, _ZERO), others.get(key, _ZERO)
            state.spent_mc += theirs[0] - before[0]
            state.energy_bought_wh += theirs[1] - before[1]
            state.wins += theirs[2] - before[2]
            state.losses += theirs[3] - before[3]
            self._applied[key] = theirs
        self.syncs += 1
