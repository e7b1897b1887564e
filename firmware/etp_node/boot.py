"""Boot: load config and state from flash, bump the epoch, pick the battery layer, run the node."""

import asyncio
import gc
import sys

from firmware.etp_node.audit import AuditLog
from firmware.etp_node.battery import SimBattery
from firmware.etp_node.node import Node, log
from firmware.etp_node.state import load_state, save_state
from shared_etp.compat import now_ms
from shared_etp.replay import next_epoch


def make_battery(config, state):
    """ADC board layer when adc_pins is configured, else the simulated pack."""
    if config.get("adc_pins"):
        from firmware.etp_node.battery_adc import AdcBattery

        return AdcBattery(config["capacity_wh"], config["cells_series"], config["adc_pins"],
                          config["adc_scale"], config["min_cell_mv"], config["max_cell_mv"])
    battery = SimBattery(config["capacity_wh"], config["soc_start"], config["cells_series"],
                         config["min_cell_mv"], config["max_cell_mv"])
    if "capacity_wh" in state and "erem" in state:  # energy sold before a reboot stays sold
        battery.capacity_wh = min(battery.capacity_wh, state["capacity_wh"])
        battery._stored_wh = min(battery.capacity_wh, state["erem"])
    return battery


def main():
    """Boot: epoch bump on flash (replay safety), then run the node forever."""
    from firmware.etp_node import config as config_mod

    config = config_mod.load()
    if not config["key"]:
        raise config_mod.ConfigError("no device key in %s: provision with `etp firmware flash`"
                                     % config_mod.CONFIG_FILE)
    state = load_state()
    epoch = next_epoch(state.get("epoch", 0), now_ms() // 1000)
    state["epoch"] = epoch
    save_state(state)
    config["epoch"] = epoch
    battery = make_battery(config, state)
    audit = AuditLog(config["audit_dir"], config["audit_file_bytes"], config["audit_files"],
                     clock=now_ms)
    # The config module is boot-only: drop it so its code and defaults table leave the heap.
    sys.modules.pop("firmware.etp_node.config", None)
    package = sys.modules.get("firmware.etp_node")
    if package is not None and hasattr(package, "config"):
        delattr(package, "config")
    del config_mod
    gc.collect()
    log("boot", device=config["device_id"], epoch=epoch, erem=battery.remaining_wh())
    audit.append({"k": "boot", "ep": epoch})
    asyncio.run(Node(config, battery, audit, state).run())

