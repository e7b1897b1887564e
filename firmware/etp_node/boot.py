"""Boot: load config and state, bump the epoch on flash, pick the battery layer, build the node.

Loaded in phases so the heap never holds everything at once: the config module (defaults
table) is read and dropped before the node's modules load, and main.py drops this module
before the node runs.
"""

import gc
import json

from firmware.etp_node import unload


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


# Heap the node's code needs while it loads (~47 KB live on the 64-bit unix port, plus the
# holes loading leaves); heap beyond this is held back while the code loads (see boot()).
_CODE_ROOM_BYTES = 54 * 1024
_RESERVE_MAX_BYTES = 16 * 1024


def boot():
    """Epoch bump on flash (replay safety), battery, audit; returns the Node to run."""
    # Loading .mpy code leaves holes all over the heap (freed module top-level code and class
    # bodies, regrown dict tables): in a 64 KB heap no free block is over ~800 bytes after it,
    # while handling a frame needs 272-464-byte dicts and TLS one ~3 KB context. So a block is
    # held at the bottom of the heap while the code loads above it, and freed before the node's
    # data is made: that data and every frame's dicts then have one contiguous region.
    from firmware.etp_node import config as config_mod

    config = config_mod.load()
    if not config["key"]:
        raise config_mod.ConfigError("no device key in %s: provision with `etp firmware flash`"
                                     % config_mod.CONFIG_FILE)
    del config_mod
    unload("firmware.etp_node.config")
    gc.collect()
    tls_context = None
    if config["mqtt_url"].startswith("mqtts://"):
        # The TLS context is one ~3 KB block: made first, while the heap is in one piece, and
        # kept for every reconnect (the setup code it needs is dropped again at once).
        from firmware.etp_node.mqtt_connect import tls_context as make_tls_context

        try:
            tls_context = make_tls_context(config.get("mqtt_ca_file") or None)
        except (OSError, ValueError):
            pass  # e.g. an unreadable CA file: each connect retries it and logs why it failed
        del make_tls_context
        unload("firmware.etp_node.mqtt_connect")
        gc.collect()
    reserve = bytearray(max(0, min(_RESERVE_MAX_BYTES, gc.mem_free() - _CODE_ROOM_BYTES)))
    # Every module the node runs with, loaded now (above the reserve).
    from firmware.etp_node.node import STATE_FILE, Node, log, save_state
    from shared_etp.compat import now_ms
    from shared_etp.replay import next_epoch

    if config.get("adc_pins"):
        import firmware.etp_node.battery_adc
    else:
        import firmware.etp_node.battery  # noqa: F401
    from firmware.etp_node.audit import AuditLog

    del reserve
    gc.collect()
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
                     clock=now_ms)
    gc.collect()
    log("boot", device=config["device_id"], epoch=epoch, erem=battery.remaining_wh())
    audit.append({"k": "boot", "ep": epoch})
    node = Node(config, battery, audit, state, tls_context)
    # Everything else in the config was consumed while building: keep only what runs on.
    node.config = {"device_id": config["device_id"], "fault_file": config.get("fault_file")}
    unload("firmware.etp_node.boot")
    return node


def main():
    """Boot and run the node forever (main.py does the same in steps, to free this module)."""
    boot().run()
