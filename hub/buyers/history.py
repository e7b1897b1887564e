"""Recent market history: clearing prices and scarcity, the public inputs of the strategies."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hub.buyers.aggregator import Aggregator

__all__ = ["MarketHistory", "demand_wh"]


def demand_wh(aggregators: Iterable[Aggregator], lot_wh: int) -> int:
    """Energy all aggregators would ask for in a lot of `lot_wh` (each capped by the lot)."""
    return sum(agg.state.wants_energy_wh(lot_wh) for agg in aggregators if not agg.state.satisfied)


class MarketHistory:
    """Sliding window over the last `window` auctions: lots offered, energy demanded, prices.

    `scarcity()` is demand / supply over the window (1.0 with no history);
    `recent_clearing_mc` lists the clearing prices of sold lots, newest last (what the hub
    publishes in its clearing notice)."""

    def __init__(self, window: int = 20) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self._supply: deque[tuple[int, int]] = deque(maxlen=window)  # (lot_wh, demand_wh)
        self._prices: deque[int] = deque(maxlen=window)

    def record_offer(self, lot_wh: int, demand: int) -> None:
        """An auction opened for `lot_wh` while aggregators demanded `demand` Wh for it."""
        self._supply.append((max(0, lot_wh), max(0, demand)))

    def record_clearing(self, price_mc: int) -> None:
        """A lot sold at `price_mc` mc/kWh."""
        self._prices.append(price_mc)

    @property
    def recent_clearing_mc(self) -> list[int]:
        """Clearing prices of recent sales, newest last."""
        return list(self._prices)

    def scarcity(self) -> float:
        """Energy demanded / energy offered over the window (1.0 when nothing is known)."""
        supply = sum(lot for lot, _ in self._supply)
        if supply <= 0:
            return 1.0
        return sum(demand for _, demand in self._supply) / supply
