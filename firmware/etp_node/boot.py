"""Boot: load config and state, bump the epoch on flash, pick the battery layer, build the node.

Loaded in phases so the heap never holds everything at once: the config module (defaults
table) is read and dropped before the node's modules load, and main.py drops this module
before the node runs.
"""

import gc
import json
import sys


def _forget(name):
    """Drop a boot-only module so its code and tables can leave the heap."""
    sys.modules.pop(name, None)
    package = sys.modules.get("firmware.etp_node")
    leaf = name[name.rfind(".") + 1 :]
    if package is not None and hasattr(package, leaf):
        delattr(package, leaf)


def make_battery(config, state):
    """ADC board layer when adc_pins is configured, else the simulated pack."""
    if config.get("adc_pins"):
        from firmware.etp_node.battery_adc import AdcBattery

        return AdcBattery(config["capacity_wh"], config["cells_series"], config["adc_pins"],
                          config["adc_scale"], config["min_cell_mv"], config["max_cell_mv"])
    from firmware.etp_node.battery import SimBattery

    battery = SimBattery(config["capacity_wh"], config["soc_start"], config["cells_series"],
                         config["min_cell_mv"], config["max_cell_mv"], config["charge_w"])
    if "capacity_wh" in state and "erem" in state:  # energy sold before a reboot stays sold
        battery.capacity_wh = min(battery.capacity_wh, state["capacity_wh"])
        battery._stored_wh = min(battery.capacity_wh, state["erem"])
    return battery


def boot():
    """Epoch bump on flash (replay safety), battery, audit; returns the Node to run."""
    from firmware.etp_node import config as config_mod

    config = config_mod.load()
    if not config["key"]:
        raise config_mod.ConfigError("no device key in %s: provision with `etp firmware flash`"
                                     % config_mod.CONFIG_FILE)
    del config_mod
    _forget("firmware.etp_node.config")
    gc.collect()
    from firmware.etp_node.node import STATE_FILE, Node, log, save_state
    from shared_etp.compat import now_ms
    from shared_etp.replay import next_epoch

    try:  # boot epoch and energy figures; {} when absent or torn
        with open(STATE_FILE) as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        state = {}
    epoch = next_epoch(state.get("epoch", 0), now_ms() // 1000)
    state["epoch"] = epoch
    save_state(state)
    config["epoch"] = epoch
    battery = make_battery(config, state)
    from firmware.etp_node.audit import AuditLog

    audit = AuditLog(config["audit_dir"], config["audit_file_bytes"], config["audit_files"],
                     clock=now_ms)
    gc.collect()
    log("boot", device=config["device_id"], epoch=epoch, erem=battery.remaining_wh())
    audit.append({"k": "boot", "ep": epoch})
    node = Node(config, battery, audit, state)
    # Everything else in the config was consumed while building: keep only what runs on.
    node.config = node.core.config = {"device_id": config["device_id"],
                                      "fault_file": config.get("fault_file")}
    _forget("firmware.etp_node.boot")
    return node


def main():
    """Boot and run the node forever (main.py does the same in steps, to free this module)."""
    import asyncio

    asyncio.run(boot().run())
