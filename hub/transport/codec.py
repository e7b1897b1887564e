"""Authenticated frames (shared_etp's field dicts) -> the typed messages hub logic reads.

The wire's short field names (`erem`, `pct`, `sale`...) stop here: the registry and the
auctions see named, unit-suffixed values. A frame reaches these functions only after
shared_etp verified its tag and its required fields, so the fields each type must carry exist.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BatteryState", "Birth", "FailureNotice", "battery_state", "birth", "failure_notice"]


@dataclass(frozen=True, slots=True)
class Birth:
    """Register: a battery's nameplate and offer as it came online."""

    device_id: int
    sent_ms: int
    energy_total_wh: int
    energy_remaining_wh: int
    pct_for_sale: int  # 1/100 %
    reserve_mc: int
    health: int


@dataclass(frozen=True, slots=True)
class BatteryState:
    """BESSStatus or QueryResponse: the battery's state now (None: not in this message)."""

    device_id: int
    sent_ms: int
    energy_remaining_wh: int
    health: int
    voltage_mv: int | None = None
    discharge_w: int | None = None
    soc: int | None = None
    pct_for_sale: int | None = None
    energy_total_wh: int | None = None
    reserve_mc: int | None = None  # QueryResponse: the reserve in force now (may be dynamic)
    offered_wh: int | None = None  # QueryResponse: the energy it offers this auction

    @property
    def sellable_wh(self) -> int:
        """What the battery sells now: its offer, else its share of the remaining energy."""
        if self.offered_wh is not None:
            return self.offered_wh
        return self.energy_remaining_wh * (self.pct_for_sale or 0) // 10000


@dataclass(frozen=True, slots=True)
class FailureNotice:
    """DeviceFailure: a self-reported fault or the battery's last will."""

    device_id: int
    health: int
    reason: int


def birth(msg: dict[str, int]) -> Birth:
    """The Register frame `msg` as a Birth."""
    return Birth(
        device_id=msg["src"],
        sent_ms=msg["ts"],
        energy_total_wh=msg["etot"],
        energy_remaining_wh=msg["erem"],
        pct_for_sale=msg["pct"],
        reserve_mc=msg["sale"],
        health=msg["health"],
    )


def battery_state(msg: dict[str, int]) -> BatteryState:
    """A BESSStatus or QueryResponse frame `msg` as a BatteryState."""
    return BatteryState(
        device_id=msg["src"],
        sent_ms=msg["ts"],
        energy_remaining_wh=msg["erem"],
        health=msg["health"],
        voltage_mv=msg.get("volt"),
        discharge_w=msg.get("dis"),
        soc=msg.get("soc"),
        pct_for_sale=msg.get("pct"),
        energy_total_wh=msg.get("etot"),
        reserve_mc=msg.get("sale"),
        offered_wh=msg.get("ereq"),
    )


def failure_notice(msg: dict[str, int]) -> FailureNotice:
    """A DeviceFailure frame `msg` as a FailureNotice."""
    return FailureNotice(device_id=msg["src"], health=msg["health"], reason=msg["reason"])
