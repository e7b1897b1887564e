"""Boot, second stage: state and boot epoch on flash, battery layer, audit log, the Node.

Loaded with the node's code (boot.load_code) and run once boot.py has been dropped, so the
node's long-lived data is made in the heap's free region with the least boot code around it;
main.py drops this module too before the node runs.
"""

import gc
import json

from firmware.etp_node import unload


def make_battery(config, state):
    """ADC board layer when adc_pins is configured, else the simulated pack."""
    if config.get("adc_pins"):
        from firmware.etp_node.battery_adc import AdcBattery

        return AdcBattery(config["capacity_wh"], config["cells_series"], config["adc_pins"],
                          config["adc_scale"], config["min_cell_mv"], config["max_cell_mv"],
                          config.get("cell_uohm", 2000), config.get("max_discharge_a", 100))
    from firmware.etp_node.battery import SimBattery

    battery = SimBattery(config["capacity_wh"], config["soc_start"], config["cells_series"],
                         config["min_cell_mv"], config["max_cell_mv"], config["charge_w"])
    if "capacity_wh" in state and "erem" in state:  # energy sold before a reboot stays sold
        battery.capacity_wh = min(battery.capacity_wh, state["capacity_wh"])
        battery._stored_wh = min(battery.capacity_wh, state["erem"])
    return battery


def assemble(config, address, tls_context, audit_tail):
    """Epoch bump on flash (replay safety), battery, audit log; returns the Node to run.

    address: the broker's (host, port, tls); audit_tail: audit_boot.recover()'s result.
    """
    from firmware.etp_node.audit import AuditLog
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
    audit = AuditLog(config["audit_dir"], config["audit_file_bytes"], config["audit_files"],
                     now_ms, audit_tail)
    gc.collect()
    log("boot", device=config["device_id"], epoch=epoch, erem=battery.remaining_wh())
    audit.append({"k": "boot", "ep": epoch})
    node = Node(config, battery, address, audit, state, tls_context)
    # Everything else in the config was consumed while building: keep only what runs on.
    node.config = {"device_id": config["device_id"], "fault_file": config.get("fault_file")}
    unload("assemble")
    return node
