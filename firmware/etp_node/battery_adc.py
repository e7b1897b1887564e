"""Board layer: battery state from ADC pins with a configurable scale (ESP32/RP2040-class).

Kept apart from battery.py so the unix port never loads it (heap). Same API as SimBattery.
"""

from firmware.etp_node.battery import OCV_CURVE, SimBattery
from shared_etp.compat import const

# protocol constants (shared_etp.schema), private so they cost no heap
_HEALTH_FAULT = const(2)
_HEALTH_OK = const(0)
_REASON_NONE = const(0)
_REASON_VOLTAGE_OUT_OF_RANGE = const(10)


def soc_from_cell_mv(cell_mv):
    """Inverse of battery.cell_ocv_mv: state of charge (1/100 %) from a resting cell voltage."""
    curve = OCV_CURVE
    if cell_mv <= curve[1]:
        return 0
    for i in range(2, len(curve), 2):
        v1 = curve[i + 1]
        if cell_mv <= v1:
            s0, v0 = curve[i - 2], curve[i - 1]
            return s0 + (curve[i] - s0) * (cell_mv - v0) // (v1 - v0)
    return 10000


class AdcBattery(SimBattery):
    """Board layer: pack voltage (and optionally current) from ADC pins with a scale.

    adc_pins: {"volt": pin, "current": pin}; adc_scale: {"volt": mV per count, "current": mA
    per count}. The state of charge is estimated from the resting voltage (OCV curve); energy
    sold is tracked so that remaining energy does not wait for the voltage to settle. A sale
    must fit the pack's power too: cell_mv(energy_wh, dis_w) (SimBattery's) predicts the terminal
    voltage from the estimated state of charge after it and the configured cell resistance, and
    a discharge past max_discharge_a is refused as if it took the cells to 0 V.
    """

    def __init__(self, capacity_wh, cells_series, adc_pins, adc_scale, min_cell_mv=2800,
                 max_cell_mv=4250, cell_uohm=2000, max_discharge_a=100):
        from machine import ADC, Pin  # type: ignore[import-not-found]

        self.dis_w = 0  # discharge of sold energy, W (SimBattery's bookkeeping)
        # What a sale may add (evaluator.py, SimBattery.cell_mv): the configured internal
        # resistance per series cell and the current limit (at nominal volts, as a power).
        self.cell_uohm = cell_uohm
        self._max_dis_w = max_discharge_a * max(1, cells_series * 37 // 10)
        self._dis_until_ms = 0
        self._now_ms = 0
        self.capacity_wh = capacity_wh
        self.cells = cells_series
        self.min_cell_mv = min_cell_mv
        self.max_cell_mv = max_cell_mv
        self._volt_adc = ADC(Pin(adc_pins["volt"]))
        self._volt_scale = adc_scale["volt"]
        current_pin = adc_pins.get("current")
        self._current_adc = ADC(Pin(current_pin)) if current_pin is not None else None
        self._current_scale = adc_scale.get("current", 0)
        self._sold_pending_wh = 0
        self._fault = _REASON_NONE

    def voltage_mv(self):
        """Pack voltage from the ADC, mV."""
        return int(self._volt_adc.read_u16() * self._volt_scale)

    def soc(self):
        """State of charge estimated from the cell voltage, 1/100 %."""
        return soc_from_cell_mv(self.voltage_mv() // self.cells)

    def remaining_wh(self):
        """Stored energy estimated from the state of charge, less energy sold but not yet out."""
        return max(0, self.capacity_wh * self.soc() // 10000 - self._sold_pending_wh)

    def health(self):
        """_HEALTH_OK or _HEALTH_FAULT."""
        return _HEALTH_FAULT if self.fault() else _HEALTH_OK

    def fault(self):
        """Voltage out of range (per cell) as a REASON_* code, else _REASON_NONE."""
        if self._fault:
            return self._fault
        cell = self.voltage_mv() // self.cells
        if cell < self.min_cell_mv or cell > self.max_cell_mv:
            return _REASON_VOLTAGE_OUT_OF_RANGE
        return _REASON_NONE

    def cell_mv(self, energy_wh=0, dis_w=0):
        """SimBattery's prediction of the terminal cell voltage a sale would leave (from the
        estimated state of charge and the configured resistance), 0 when its discharge would
        pass the pack's current limit (max_discharge_a): the pack cannot deliver it."""
        if self.dis_w + dis_w > self._max_dis_w:
            return 0
        return SimBattery.cell_mv(self, energy_wh, dis_w)

    def deliver(self, energy_wh, duration_s):
        """Record sold energy and the discharge the inverter is told to run."""
        self._sold_pending_wh += energy_wh
        duration_s = max(1, duration_s)  # as SimBattery.deliver
        self.dis_w += energy_wh * 3600 // duration_s
        end = self._now_ms + duration_s * 1000
        if end > self._dis_until_ms:
            self._dis_until_ms = end

    def inject_fault(self, name):
        """Force a fault for tests on hardware ("clear" removes it)."""
        self._fault = _REASON_NONE if name == "clear" else _REASON_VOLTAGE_OUT_OF_RANGE

    def step(self, now_ms):
        """Ends finished discharges; the voltage then reflects the sold energy."""
        was = self.dis_w
        SimBattery.step(self, now_ms)
        if was and not self.dis_w:
            self._sold_pending_wh = 0
