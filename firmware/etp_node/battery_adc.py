"""Board layer: battery state from ADC pins with a configurable scale (ESP32/RP2040-class).

Kept apart from battery.py so the unix port never loads it (heap). Same API as SimBattery.
"""

from firmware.etp_node.battery import Delivery, soc_from_cell_mv
from shared_etp.schema import HEALTH_FAULT, HEALTH_OK, REASON_NONE, REASON_VOLTAGE_OUT_OF_RANGE


class AdcBattery(Delivery):
    """Board layer: pack voltage (and optionally current) from ADC pins with a scale.

    adc_pins: {"volt": pin, "current": pin}; adc_scale: {"volt": mV per count, "current": mA
    per count}. The state of charge is estimated from the resting voltage (OCV curve); energy
    sold is tracked so that remaining energy does not wait for the voltage to settle.
    """

    def __init__(self, capacity_wh, cells_series, adc_pins, adc_scale, min_cell_mv=2800,
                 max_cell_mv=4250):
        from machine import ADC, Pin  # type: ignore[import-not-found]

        self._init_delivery()
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
        self._fault = REASON_NONE

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
        """HEALTH_OK or HEALTH_FAULT."""
        return HEALTH_FAULT if self.fault() else HEALTH_OK

    def fault(self):
        """Voltage out of range (per cell) as a REASON_* code, else REASON_NONE."""
        if self._fault:
            return self._fault
        cell = self.voltage_mv() // self.cells
        if cell < self.min_cell_mv or cell > self.max_cell_mv:
            return REASON_VOLTAGE_OUT_OF_RANGE
        return REASON_NONE

    def deliver(self, energy_wh, duration_s):
        """Record sold energy and the discharge the inverter is told to run."""
        self._sold_pending_wh += energy_wh
        self._start_delivery(energy_wh, duration_s)

    def inject_fault(self, name):
        """Force a fault for tests on hardware ("clear" removes it)."""
        self._fault = REASON_NONE if name == "clear" else REASON_VOLTAGE_OUT_OF_RANGE

    def step(self, now_ms):
        """Ends finished discharges; the voltage then reflects the sold energy."""
        was = self._dis_w
        self._step_delivery(now_ms)
        if was and not self._dis_w:
            self._sold_pending_wh = 0
