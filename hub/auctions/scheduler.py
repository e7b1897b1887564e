"""Which battery auctions next: per-device cadence, the parallel-auction limit, trading periods.

Pure apart from the clock it is handed: `due(now_ms)` returns the devices to open an auction
for now; the driver opens them.
"""

from __future__ import annotations

from collections.abc import Callable, Container

from hub.auctions.config import AuctionConfig
from hub.auctions.control import TradingControls
from hub.buyers.bidding import Buyers
from hub.devices import Device, Registry

__all__ = ["Scheduler"]


class Scheduler:
    """Opens an auction for each online battery every `auction_interval_ms` (first auctions
    staggered so a fleet coming up does not open all at once), at most `max_parallel_auctions`
    at a time, and only while some aggregator is buying and an operator has not paused trading
    (`controls`; batteries out of service are skipped). Starts each trading period."""

    def __init__(
        self,
        config: AuctionConfig,
        registry: Registry,
        buyers: Buyers,
        on_new_period: Callable[[int], None],
        controls: TradingControls | None = None,
        aligned: Callable[[], int] | None = None,
    ) -> None:
        # aligned (hub workers sharing a site): the wall clock in ms; trading periods are then
        # the wall clock's intervals of trading_period_ms, the same on every worker
        self.aligned = aligned
        self.controls = controls if controls is not None else TradingControls()
        self.config = config
        self.registry = registry
        self.buyers = buyers
        self.on_new_period = on_new_period
        self.periods = 0
        self._period_started: int | None = None
        self._next_auction_at: dict[int, int] = {}

    def due(self, now: int, busy: Container[int], in_flight: int) -> list[Device]:
        """Devices to open an auction for at ticks `now`; `busy` holds devices with one in
        flight, `in_flight` counts them."""
        online = self.registry.online()
        if self._period_started is None and not online:
            return []  # the first trading period begins with the first battery online
        if self.aligned is not None:
            now = self._aligned_period()
        else:
            self._maybe_start_period(now)
        if self._period_started is not None:
            self.buyers.pace(now - self._period_started, self.config.trading_period_ms)
        if self.controls.paused is not None:
            return []  # an operator paused the site: open auctions finish, no new ones
        if self.buyers.satisfied:
            return []  # nobody is buying yet (paced) or any more this trading period
        config = self.config
        room = config.max_parallel_auctions - in_flight
        chosen: list[Device] = []
        quarantined = self.controls.quarantined
        for device in online:
            if len(chosen) >= room:
                break
            device_id = device.device_id
            if device_id in busy or device_id in self.controls.out_of_service:
                continue
            if device_id in self.controls.draining:
                continue  # being handed to another worker: its last auction ends first
            if quarantined and now < quarantined.get(device_id, now):
                continue  # flooding: no auction until its quarantine ends
            due = self._next_auction_at.get(device_id)
            if due is None:
                due = now + (device_id * 37) % max(1, config.auction_interval_ms)
                self._next_auction_at[device_id] = due
            if now < due:
                continue
            if min(device.sellable_wh, config.lot_wh) < config.min_lot_wh:
                continue
            self._next_auction_at[device_id] = now + config.auction_interval_ms
            chosen.append(device)
        return chosen

    def _aligned_period(self) -> int:
        """Wall-clock periods: start one when the wall clock crosses into the next interval;
        returns the wall time (the pacing clock)."""
        assert self.aligned is not None
        wall, period = self.aligned(), self.config.trading_period_ms
        if period <= 0:
            return wall
        started = wall - wall % period
        if self._period_started is None:
            self._period_started = started
        elif started != self._period_started:
            self._period_started = started
            self.periods += 1
            self.buyers.start_period()
            self.on_new_period(self.periods)
        return wall

    def _maybe_start_period(self, now: int) -> None:
        """Start a new trading period when the current one is over: every aggregator's budget
        and energy requirement apply afresh (they buy for each delivery period)."""
        period = self.config.trading_period_ms
        if period <= 0:
            return
        if self._period_started is None:
            self._period_started = now
            return
        if now - self._period_started < period:
            return
        self._period_started = now
        self.periods += 1
        self.buyers.start_period()
        self.on_new_period(self.periods)
