"""Battery state: a simulated Li-ion pack for the unix port, and an ADC layer for real boards.

AdcBattery (battery_adc.py, a subclass) exposes the same API, used by the core: capacity_wh,
remaining_wh(), soc(), voltage_mv(), discharge_w(), health(), fault() (a REASON_* code or 0),
deliver(energy_wh, duration_s), step(now_ms) and inject_fault(name), and for bid evaluation
(evaluator.py: can a sale's current be delivered?) cell_mv(energy_wh, dis_w), min_cell_mv and
dis_w (W of sold energy being discharged). All values are integers in protocol units.
"""

from shared_etp.compat import const

# Open-circuit voltage of one Li-ion (NMC) cell by state of charge: soc (1/100 %), mV, soc, mV...
OCV_CURVE = (0, 3000, 500, 3300, 1000, 3450, 2000, 3560, 4000, 3660, 6000, 3790, 8000, 3950,
             9500, 4100, 10000, 4180)

# protocol constants (shared_etp.schema), private so they cost no heap
_HEALTH_DEGRADED = const(1)
_HEALTH_FAULT = const(2)
_HEALTH_OK = const(0)
_REASON_NONE = const(0)
_REASON_OVER_TEMPERATURE = const(11)
_REASON_VOLTAGE_OUT_OF_RANGE = const(10)
_CELL_RESISTANCE_UOHM = const(2000)  # per cell of a 10 kWh pack; larger packs have more cells
_RESISTANCE_REF_WH = const(10000)  # in parallel, which divides the resistance
_DEGRADED_SOH = const(8000)  # state of health below this (1/100 %) reports "degraded"
_FADE_PER_KWH_PPM = const(40)  # capacity lost per kWh delivered, parts per million of capacity
_MAX_TEMP_DC = const(600)  # 60.0 degC in tenths: over-temperature fault


def cell_ocv_mv(soc):
    """Open-circuit cell voltage (mV) at a state of charge (1/100 %), piecewise linear."""
    curve = OCV_CURVE
    if soc <= 0:
        return curve[1]
    for i in range(2, len(curve), 2):
        s1 = curve[i]
        if soc <= s1:
            s0, v0 = curve[i - 2], curve[i - 1]
            return v0 + (curve[i + 1] - v0) * (soc - s0) // (s1 - s0)
    return curve[-1]


class SimBattery:
    """A simulated pack: energy, OCV curve with IR drop, capacity fade, faults on demand."""

    def __init__(self, capacity_wh=10000, soc=9000, cells_series=14, min_cell_mv=2800,
                 max_cell_mv=4250, charge_w=0):
        self.charge_w = charge_w  # the site's charger (PV or grid), W; 0 = none
        self._charge_mwh = 0  # charged energy not yet whole Wh
        self.dis_w = 0  # discharge of sold energy, W (every lot until the last one ends)
        # internal resistance of one series cell (its parallel group), micro-ohm
        self.cell_uohm = _CELL_RESISTANCE_UOHM * _RESISTANCE_REF_WH // max(1, capacity_wh)
        self._dis_until_ms = 0
        self._now_ms = 0
        self.capacity_wh = capacity_wh
        self.nominal_wh = capacity_wh
        self.cells = cells_series
        self.min_cell_mv = min_cell_mv
        self.max_cell_mv = max_cell_mv
        self._stored_wh = capacity_wh * soc // 10000
        self._fault = _REASON_NONE
        self._forced_cell_mv = 0
        self.temp_dc = 250

    def discharge_w(self):
        """Current discharge power in W (negative while charging)."""
        if self.charge_w and self._stored_wh < self.capacity_wh:
            return self.dis_w - self.charge_w
        return self.dis_w

    def remaining_wh(self):
        """Energy stored now, Wh."""
        return self._stored_wh

    def soc(self):
        """State of charge, 1/100 %."""
        if self.capacity_wh <= 0:
            return 0
        return min(10000, self._stored_wh * 10000 // self.capacity_wh)

    def cell_mv(self, energy_wh=0, dis_w=0):
        """Terminal voltage of one cell, mV: the open-circuit voltage at the state of charge
        less the IR drop of the discharge current. Now, or (bid evaluation) once energy_wh
        more has left the store and dis_w more W are discharged on top of self.dis_w. (The
        arguments reuse names the board has interned: each new name is heap.)"""
        if not (energy_wh or dis_w) and self._forced_cell_mv:  # (AdcBattery: never now)
            return self._forced_cell_mv
        capacity = self.capacity_wh
        stored = self.remaining_wh() - energy_wh
        soc = 0 if capacity <= 0 or stored <= 0 else min(10000, stored * 10000 // capacity)
        current_a = (self.dis_w + dis_w) // max(1, self.cells * 37 // 10)  # at nominal volts
        return cell_ocv_mv(soc) - current_a * self.cell_uohm // 1000

    def voltage_mv(self):
        """Pack terminal voltage, mV."""
        return self.cell_mv() * self.cells

    def health(self):
        """_HEALTH_OK, _HEALTH_DEGRADED (capacity faded) or _HEALTH_FAULT."""
        if self.fault():
            return _HEALTH_FAULT
        # State of health: usable capacity against nominal (it fades with throughput).
        if self.capacity_wh * 10000 // self.nominal_wh < _DEGRADED_SOH:
            return _HEALTH_DEGRADED
        return _HEALTH_OK

    def fault(self):
        """The self-detected fault as a REASON_* code, or _REASON_NONE."""
        if self._fault:
            return self._fault
        cell = self.cell_mv()
        if cell < self.min_cell_mv or cell > self.max_cell_mv:
            return _REASON_VOLTAGE_OUT_OF_RANGE
        if self.temp_dc > _MAX_TEMP_DC:
            return _REASON_OVER_TEMPERATURE
        return _REASON_NONE

    def deliver(self, energy_wh, duration_s):
        """Commit sold energy: take it from the store and discharge it over duration_s."""
        if energy_wh > self._stored_wh:
            raise ValueError(
                "cannot deliver %d Wh, only %d Wh stored" % (energy_wh, self._stored_wh)
            )
        self._stored_wh -= energy_wh
        # Capacity fade with throughput: the pack's state of health declines as it works.
        fade = self.nominal_wh * _FADE_PER_KWH_PPM * energy_wh // 1000000000
        self.capacity_wh = max(self._stored_wh, self.capacity_wh - fade)
        # The discharge: every lot's power adds up until the last one ends (AdcBattery's
        # deliver does the same; no shared method: each function is heap on a board).
        duration_s = max(1, duration_s)
        self.dis_w += energy_wh * 3600 // duration_s
        end = self._now_ms + duration_s * 1000
        if end > self._dis_until_ms:
            self._dis_until_ms = end

    def inject_fault(self, name):
        """Simulate a fault: undervolt, overvolt, overtemp; "clear" removes it."""
        self._fault = _REASON_NONE
        self._forced_cell_mv = 0
        self.temp_dc = 250
        if name == "undervolt":
            self._forced_cell_mv = self.min_cell_mv - 300
        elif name == "overvolt":
            self._forced_cell_mv = self.max_cell_mv + 200
        elif name == "overtemp":
            self.temp_dc = _MAX_TEMP_DC + 100
        elif name != "clear":
            raise ValueError("unknown fault %r: undervolt, overvolt, overtemp or clear" % name)

    def step(self, now_ms):
        """Advance the model to now_ms (charges from the charger, ends finished discharges)."""
        if self.charge_w and self._now_ms and now_ms > self._now_ms:
            if self._stored_wh < self.capacity_wh:
                # W x ms / 3600 = mWh
                self._charge_mwh += self.charge_w * (now_ms - self._now_ms) // 3600
                whole_wh = self._charge_mwh // 1000
                self._charge_mwh -= whole_wh * 1000
                self._stored_wh = min(self.capacity_wh, self._stored_wh + whole_wh)
            else:
                self._charge_mwh = 0
        self._now_ms = now_ms
        if self.dis_w and now_ms >= self._dis_until_ms:
            self.dis_w = 0
