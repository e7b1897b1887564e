"""Legacy batteries in `etp demo --legacy-batteries K`: K test doubles of the Go prototype's
battery on loopback, bridged into the demo's market as devices 60001.. (the legacy id range)."""

from __future__ import annotations

import random
from typing import Any

from hub.legacy.bridge import LEGACY_DEVICE_IDS, BridgeConfig, LegacyBridge, LegacyTarget
from hub.legacy.double import DoubleConfig, LegacyBatteryDouble

__all__ = ["DemoLegacy"]

FIRST_DEMO_ID = LEGACY_DEVICE_IDS.start + 1


class DemoLegacy:
    """The demo's legacy doubles and the bridge for them."""

    def __init__(self, count: int, seed: int, charge_w: int) -> None:
        rng = random.Random(seed * 7919 + count)
        self.doubles = [
            LegacyBatteryDouble(
                DoubleConfig(
                    device_id=index + 1,
                    energy_total_wh=20_000,
                    remaining_wh=rng.randrange(12_000, 18_001, 500),
                    pct_for_sale=8000,
                    reserve_mc=rng.randrange(18_000, 24_001, 500),
                    voltage_mv=51_200,
                    charge_w=charge_w,
                )
            )
            for index in range(count)
        ]
        self.bridge: LegacyBridge | None = None

    async def start(self, mqtt_url: str, site: str, master_secret: bytes, **kwargs: Any) -> None:
        """Start the doubles, then the bridge (returns once it is on the broker)."""
        for double in self.doubles:
            await double.start()
        self.bridge = LegacyBridge(
            BridgeConfig(
                targets=[
                    LegacyTarget("127.0.0.1", double.port, FIRST_DEMO_ID + index)
                    for index, double in enumerate(self.doubles)
                ],
                mqtt_url=mqtt_url,
                site=site,
                master_secret=master_secret,
                **kwargs,
            )
        )
        await self.bridge.start()

    def trades(self) -> int:
        """Trades committed through the bridge."""
        return self.bridge.trades() if self.bridge is not None else 0

    def status_suffix(self) -> str:
        """Appended to the demo's status line."""
        return f" | legacy trades {self.trades()}" if self.doubles else ""

    def summary_lines(self, verified: list[Any]) -> list[str]:
        """Lines for the demo's summary; `verified`: the store's verified trades (TradeRow)."""
        if not self.doubles:
            return []
        legacy = [t for t in verified if t.device_id in LEGACY_DEVICE_IDS]
        sold = sum(double.sold_wh for double in self.doubles)
        lines = [
            f"  legacy: {len(self.doubles)} Go-prototype batteries (test doubles) via the "
            f"bridge, ids {FIRST_DEMO_ID}-{FIRST_DEMO_ID + len(self.doubles) - 1}: "
            f"{len(legacy)} verified trades of {len(verified)}, "
            f"{sum(t.energy_wh for t in legacy) / 1000:.1f} kWh "
            f"(the batteries confirmed {sum(len(d.confirmed) for d in self.doubles)} sales, "
            f"{sold / 1000:.1f} kWh)"
        ]
        for stats, double in zip(
            self.bridge.stats() if self.bridge else [], self.doubles, strict=False
        ):
            lines.append(
                f"    legacy {stats['device_id']}: {stats['trades']} trades, "
                f"{stats['sold_wh'] / 1000:.1f} kWh, bids rejected "
                f"{stats['rejected']}, garbled reads at the battery {double.garbled}"
            )
        return lines

    async def stop(self) -> None:
        """Stop the bridge (cleanly: no wills), then the doubles."""
        if self.bridge is not None:
            await self.bridge.stop()
        for double in self.doubles:
            await double.stop()
