"""A legacy battery as the firmware core sees a pack: its state from the prototype's reports,
its energy budget kept by the bridge.

`LegacyPack` has the battery API the firmware's NodeCore drives (firmware/etp_node/battery.py:
capacity_wh, remaining_wh(), soc(), voltage_mv(), discharge_w(), health(), fault(), deliver(),
step()), so the bridge runs the unchanged core over it. The prototype accepts every bid at or
above its reserve, also after it sold everything, so its own word on energy is not enough: the
pack keeps the budget itself. The first report sets it to what the battery offered
(remainingBatteryEnergy x percentageForSale); each trade the bridge commits takes its energy
off; a later report adds the share for sale of energy the battery gained since the report
before (it charged: a sale never looks like a gain) and caps the budget at what the battery
offers now. Whether or not the prototype counts its own sales, the budget never includes
energy already sold.
"""

from __future__ import annotations

from shared_etp.schema import (
    BESS_STATUS,
    HEALTH_FAULT,
    QUERY_RESPONSE,
    REASON_DEVICE_FAULT,
    REASON_LINK_LOST,
    REASON_NONE,
    REGISTER,
)

__all__ = ["ENERGY_STEP_WH", "PRICE_STEP_MC", "LegacyPack"]

# Resolution of the prototype's fields (two decimals): kWh -> 10 Wh, cents/kWh -> 10 mc/kWh
ENERGY_STEP_WH = 10
PRICE_STEP_MC = 10

# Legacy messages that carry the battery's state: the full offer, or (BESSStatus) its state only
_OFFER_TYPES = (REGISTER, QUERY_RESPONSE)


def _steps(energy_wh: int) -> int:
    """Energy rounded down to what the prototype can write (10 Wh steps)."""
    return energy_wh - energy_wh % ENERGY_STEP_WH


class LegacyPack:
    """Battery state reported by one legacy battery, and the energy it may still sell."""

    def __init__(self) -> None:
        self.capacity_wh = 0
        self.pct_for_sale = 0  # 1/100 %, as reported
        self.reserve_mc = 0  # salePrice, milli-cents/kWh
        self.reported_remaining_wh = 0
        self.voltage = 0
        self.discharge = 0
        self.reported_health = 0
        self.budget_wh: int | None = None  # energy still for sale; None until the first offer
        self.remaining = 0  # the bridge's view: reported remaining less what it sold since
        self.sold_wh = 0
        self.link_up = False

    @property
    def reported(self) -> bool:
        """True once the battery made an offer (its first QueryResponse or Register)."""
        return self.budget_wh is not None

    def update(self, msg: dict[str, int]) -> bool:
        """Adopt a legacy message's state fields; True if it was a report (offer or status)."""
        msg_type = msg["t"]
        if msg_type in _OFFER_TYPES:
            self.capacity_wh = msg["etot"]
            self.pct_for_sale = msg["pct"]
            self.reserve_mc = msg["sale"]
        elif msg_type != BESS_STATUS or self.budget_wh is None:
            return False
        erem = msg["erem"]
        offered = _steps(erem * self.pct_for_sale // 10000)
        if self.budget_wh is None:
            self.budget_wh = offered
            self.remaining = erem
        else:
            # Energy it gained since its last report (charging) is new: its share for sale
            # joins the budget. A sale never shows as a gain, whether or not it counts them.
            gained = max(0, erem - self.reported_remaining_wh)
            budget = self.budget_wh + _steps(gained * self.pct_for_sale // 10000)
            self.budget_wh = min(budget, offered)  # and never more than it offers now
            self.remaining = min(self.remaining + gained, erem)
        self.reported_remaining_wh = erem
        self.reported_health = msg["health"]
        self.voltage = msg["volt"]
        self.discharge = msg["dis"]
        return True

    def offered_wh(self) -> int:
        """Energy the bridge may still promise before holds (NodeCore.max_sellable_wh)."""
        return max(0, self.budget_wh or 0)

    def lose(self, energy_wh: int) -> None:
        """Take energy off the budget without a trade (a sale the battery may have made)."""
        self.budget_wh = max(0, (self.budget_wh or 0) - energy_wh)

    # --- the firmware battery API (firmware/etp_node/battery.py) ----------------------------
    def remaining_wh(self) -> int:
        """Energy stored now as far as the bridge knows, Wh."""
        return max(0, self.remaining)

    def soc(self) -> int:
        """State of charge, 1/100 %."""
        if self.capacity_wh <= 0:
            return 0
        return min(10000, self.remaining_wh() * 10000 // self.capacity_wh)

    def voltage_mv(self) -> int:
        """Pack voltage as reported, mV."""
        return self.voltage

    def discharge_w(self) -> int:
        """Discharge as reported, W (negative = charging)."""
        return self.discharge

    # The core's power rule (firmware Evaluator.power_cap_wh: no lot the pack cannot deliver)
    # asks the battery layer for the cell voltage a sale would leave. The bridge knows no cells:
    # a legacy battery's offer is already what it can deliver, so every lot within the offer
    # (offered_wh, which the core checks first) passes.
    min_cell_mv = 0

    def cell_mv(self, energy_wh: int = 0, dis_w: int = 0) -> int:
        """Above min_cell_mv for any lot: the legacy battery's offer is its power rule."""
        return 1

    def health(self) -> int:
        """Health code as reported (fault while the link is down)."""
        return HEALTH_FAULT if not self.link_up else self.reported_health

    def fault(self) -> int:
        """link_lost while the bridge cannot reach the battery, device_fault if it reports a
        fault, else none: the core turns a fault into a DeviceFailure on the death topic."""
        if not self.link_up:
            return REASON_LINK_LOST
        if self.reported_health >= HEALTH_FAULT:
            return REASON_DEVICE_FAULT
        return REASON_NONE

    def deliver(self, energy_wh: int, duration_s: int) -> None:
        """A trade committed (on the legacy battery first): off the budget and the store."""
        del duration_s  # the legacy battery discharges on its own schedule
        self.lose(energy_wh)
        self.remaining -= energy_wh
        self.sold_wh += energy_wh

    def step(self, now_ms: int) -> None:
        """Nothing to advance: the state is what the battery last reported."""
