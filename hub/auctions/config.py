"""The auction side's configuration, built from Settings (every default lives in Settings)."""

from __future__ import annotations

from dataclasses import dataclass

from hub.auctions.messages import (
    SessionRules,
)
from hub.auctions.rules import Mechanism
from hub.settings import Settings

__all__ = ["AuctionConfig"]


@dataclass(frozen=True)
class AuctionConfig:
    """Cadence, limits and timing of the site's auctions. Build it with `from_settings`; the
    few values that are not site settings are internal tuning with their reason."""

    site: str
    mechanism: Mechanism
    auction_interval_ms: int
    max_parallel_auctions: int
    round_ms: int
    max_rounds: int
    response_timeout_ms: int
    hold_timeout_ms: int
    lot_wh: int
    min_lot_wh: int
    notice_interval_ms: int
    trading_period_ms: int
    # auctions whose store rows are being opened at once (their rows share group commits)
    store_concurrency: int = 64
    # how often the scheduler looks for batteries due an auction
    scheduler_tick_ms: int = 20
    # asking a battery what became of an auction: first wait for its answer, and the longest
    # wait between asks while it stays silent (doubling in between)
    ask_wait_ms: int = 2_000
    ask_backoff_max_ms: int = 30_000

    @classmethod
    def from_settings(cls, settings: Settings) -> AuctionConfig:
        """The auction configuration of a hub run with `settings`."""
        return cls(
            site=settings.site,
            mechanism=Mechanism(settings.mechanism),
            auction_interval_ms=settings.auction_interval_ms,
            max_parallel_auctions=settings.max_parallel_auctions,
            round_ms=settings.round_ms,
            max_rounds=settings.max_rounds,
            response_timeout_ms=settings.response_timeout_ms,
            hold_timeout_ms=settings.hold_timeout_ms,
            lot_wh=settings.lot_wh,
            min_lot_wh=settings.min_lot_wh,
            notice_interval_ms=settings.notice_interval_ms,
            trading_period_ms=settings.trading_period_ms,
        )

    def session_rules(self) -> SessionRules:
        """What each auction session needs of this configuration."""
        rules: dict[str, int] = {}
        if self.mechanism is Mechanism.ASCENDING:
            rules["max_rounds"] = self.max_rounds
        return SessionRules(
            mechanism=self.mechanism,
            max_lot_wh=self.lot_wh,
            min_lot_wh=self.min_lot_wh,
            response_timeout_ms=self.response_timeout_ms,
            hold_timeout_ms=self.hold_timeout_ms,
            auction_rules=rules,
        )
