"""Bidder reputation read back from the ledger: the aggregators' Reputation accounts (trades
settled, disputes lost), read every few seconds, turn the hub's own figure into the one the
signed reputation notice publishes (hub/settlement/README.md, "Reputation")."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from hub.settlement.cluster import Cluster, ClusterUnavailableError
from hub.settlement.ledger import PartyNotReady, SiteSetupError
from hub.settlement.site import MarketSite

__all__ = [
    "LOST_DISPUTE_WEIGHT",
    "ChainReputation",
    "ChainStanding",
    "chain_factor",
    "combined_reputation",
]

log = structlog.get_logger(__name__)

SCALE = 10_000  # the notice's scale: hundredths of a percent
# a lost dispute weighs as much as this many trades that did not go through (the program takes
# 10 points for a lost dispute and gives 1 per settled trade)
LOST_DISPUTE_WEIGHT = 10


@dataclass(frozen=True)
class ChainStanding:
    """An aggregator's Reputation account as the ledger holds it."""

    trades: int
    score: int
    disputes_opened: int
    disputes_lost: int


def chain_factor(trades: int, disputes_lost: int) -> int:
    """0..10000: 10000 x (trades + 1) / (trades + 1 + 10 x disputes lost). 10000 without a lost
    dispute; falls with each lost dispute, and settled trades dilute old losses. Monotone:
    never lower for more trades, always lower for one more lost dispute."""
    trades, lost = max(0, trades), max(0, disputes_lost)
    return SCALE * (trades + 1) // (trades + 1 + LOST_DISPUTE_WEIGHT * lost)


def combined_reputation(hub_score: int, standing: ChainStanding | None) -> int:
    """The published figure: the hub's confirmation ratio (0..10000) x the ledger's factor;
    the hub's figure alone when the ledger has no account for the bidder."""
    hub_score = max(0, min(SCALE, hub_score))
    if standing is None:
        return hub_score
    return hub_score * chain_factor(standing.trades, standing.disputes_lost) // SCALE


class ChainReputation:
    """Reads the aggregators' Reputation accounts every `interval_s` and combines them with the
    hub's figures. While the ledger is not usable (not set up, unreachable, or the last
    successful read older than `stale_s`) it publishes the hub's figures unchanged."""

    def __init__(
        self,
        cluster: Cluster,
        site: MarketSite,
        *,
        interval_s: float = 3.0,
        bidder_ids: Iterable[int] = (),
    ) -> None:
        self.cluster = cluster
        self.site = site
        self.interval_s = interval_s
        self.stale_s = 3 * interval_s  # no successful read for this long: the hub figure
        self.standings: dict[int, ChainStanding] = {}
        self.read_at: float | None = None  # monotonic time of the last successful read
        self.last_error: str | None = None
        self._wanted: set[int] = set(bidder_ids)
        self._task: asyncio.Task[None] | None = None

    @property
    def fresh(self) -> bool:
        """True when the last successful read is recent enough to publish from."""
        return self.read_at is not None and time.monotonic() - self.read_at <= self.stale_s

    def published(self, hub_scores: Mapping[int, int]) -> dict[int, int]:
        """The reputation to publish for each bidder of `hub_scores` (the hub's own figures,
        0..10000); they are also the bidders read at the next refresh."""
        self._wanted.update(hub_scores)
        if not self.fresh:
            return dict(hub_scores)
        return {
            bidder: combined_reputation(score, self.standings.get(bidder))
            for bidder, score in hub_scores.items()
        }

    async def refresh(self) -> None:
        """Read the wanted aggregators' Reputation accounts once (one getMultipleAccounts)."""
        if not self.site.ready:
            return
        bidders, addresses = [], []
        for bidder in sorted(self._wanted):
            try:  # the aggregator's wallet (on a real network: registered by its owner)
                party = await self.site.ensure_aggregator(bidder)
            except (PartyNotReady, SiteSetupError):
                continue  # no account to read: the hub's figure for it
            bidders.append(bidder)
            addresses.append(party.reputation)
        accounts = await self.cluster.get_accounts(addresses) if addresses else []
        standings: dict[int, ChainStanding] = {}
        for bidder, account in zip(bidders, accounts, strict=True):
            if account is None:
                continue
            name, fields = self.site.idl.decode_account(account.data)
            if name != "Reputation":
                continue
            standings[bidder] = ChainStanding(
                trades=int(fields["trades"]),
                score=int(fields["score"]),
                disputes_opened=int(fields["disputes_opened"]),
                disputes_lost=int(fields["disputes_lost"]),
            )
        self.standings = standings
        self.read_at = time.monotonic()
        self.last_error = None

    def status(self) -> dict[str, Any]:
        """The "reputation" part of the settlement status: where the published figure comes
        from ("ledger" or "hub", the fallback) and the age of the last read."""
        age = None if self.read_at is None else round(time.monotonic() - self.read_at, 1)
        return {
            "source": "ledger" if self.fresh else "hub",
            "read_age_s": age,
            "disputes_lost": {
                b: s.disputes_lost for b, s in self.standings.items() if s.disputes_lost
            },
            "last_error": self.last_error,
        }

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="chain-reputation")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except ClusterUnavailableError as exc:
                if self.last_error is None:
                    log.warning(
                        "reputation: ledger not readable, publishing the hub's figures "
                        "once the last read is stale",
                        error=str(exc),
                    )
                self.last_error = str(exc)
            except Exception as exc:  # a bug or an undecodable account: say so, keep running
                log.exception("reputation read failed", error=str(exc))
                self.last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(self.interval_s)
