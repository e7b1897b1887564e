"""Boot, first stage: config, TLS context, the audit log's tail, then the node's code.

Loaded in phases so the heap never holds everything at once: the config module (defaults
table) is read and dropped before the node's modules load, and main.py drops this module
before assemble.py (loaded with the node's code) makes the node's data.
"""

import gc

from firmware.etp_node import unload


def parse_url(url):
    """(host, port, tls) from mqtt://host[:port] or mqtts://host[:port]."""
    tls = False
    if url.startswith("mqtts://"):
        tls = True
        rest = url[8:]
    elif url.startswith("mqtt://"):
        rest = url[7:]
    else:
        raise ValueError("broker URL %r must start with mqtt:// or mqtts://" % url)
    rest = rest.split("/")[0]
    if ":" in rest:
        host, port = rest.rsplit(":", 1)
        return host, int(port), tls
    return rest, 8883 if tls else 1883, tls


# Code loading starts with the heap less this held back (a little less than the code takes:
# the first try fails fast), and holds back 512 bytes less at each MemoryError.
_CODE_ROOM_BYTES = 44 * 1024
_ROOM_STEP_BYTES = 512


def load_code(modules):
    """Import modules above a block held at the bottom of the heap, the largest block with
    which they still load, then free it.

    Loading .mpy code leaves holes all over the heap (freed module top-level code and class
    bodies, regrown dict tables): loaded into all the heap, a 64 KB heap keeps no free block
    over ~800 bytes, while the node's data and each frame need blocks of up to ~370 bytes (TLS
    a ~3 KB context). Held down, the code fills its own holes, and the block freed after is
    one contiguous region for the data made next and for every frame.
    """
    held_bytes = gc.mem_free() - _CODE_ROOM_BYTES
    while True:
        held = bytearray(max(0, held_bytes))
        try:
            for name in modules:
                __import__(name)  # a module that fails is dropped: the next try loads it again
            break
        except MemoryError:
            if held_bytes <= 0:
                raise
            held = None
            gc.collect()
            held_bytes -= _ROOM_STEP_BYTES
    del held
    gc.collect()


def boot():
    """Config, TLS context, audit tail; loads the node's code (assemble.py with it).

    Returns assemble()'s arguments: (config, broker (host, port, tls), TLS context or None,
    audit tail).
    """
    from firmware.etp_node import config as config_mod

    config = config_mod.load()
    if not config["key"]:
        raise config_mod.ConfigError("no device key in %s: provision with `etp firmware flash`"
                                     % config_mod.CONFIG_FILE)
    address = parse_url(config["mqtt_url"])  # a bad URL stops the boot here, not at connect
    del config_mod
    unload("config")
    gc.collect()
    if config.get("clock_offset_ms"):
        # Simulation: the port's clock moved (e.g. back to 2000-01-01, where a board without a
        # real-time clock starts); NodeCore then waits for the hub's time (clock_sync.py,
        # which moves the same offset).
        from shared_etp import compat

        compat._EPOCH_OFFSET_MS += config["clock_offset_ms"]
    tls_context = None
    if address[2]:  # mqtts://
        # The TLS context is one ~3 KB block: made first, while the heap is in one piece, and
        # kept for every reconnect (the setup code it needs is dropped again at once).
        from firmware.etp_node import tls_setup

        try:
            tls_context = tls_setup.tls_context(config.get("mqtt_ca_file") or None)
        except (OSError, ValueError):
            pass  # e.g. an unreadable CA file: each connect retries it and logs why it failed
        del tls_setup
        unload("tls_setup")
        gc.collect()
    # The audit log's tail (a torn last line is ended), read before the node's code loads so
    # the reading code and its buffers come and go while the heap is still in one piece.
    from firmware.etp_node import audit_boot

    audit_tail = audit_boot.recover(config["audit_dir"], config)  # sizes the trade ring too
    del audit_boot
    unload("audit_boot")
    unload("audit_read")  # loaded by audit_boot
    gc.collect()
    # Every module the node runs with, loaded now, above the block load_code() holds.
    load_code(("firmware.etp_node.node", "shared_etp.replay", "firmware.etp_node.audit",
               "firmware.etp_node.battery_adc" if config.get("adc_pins")
               else "firmware.etp_node.battery", "firmware.etp_node.assemble"))
    unload("boot")  # main.py drops it before assemble() makes the node's data
    return config, address, tls_context, audit_tail


def main():
    """Boot and run the node forever (main.py does the same in steps, to free each module)."""
    from firmware.etp_node.assemble import assemble

    assemble(*boot()).run()
