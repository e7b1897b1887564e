"""The BESS node: battery state, energy holds, bid evaluation, audit log, MQTT client, tasks."""


def unload(name):
    """Drop a module the node uses only now and then (boot, connecting, audit recovery) so its
    code leaves the heap until it is next imported: a 64 KB heap has no room to keep it."""
    import sys

    sys.modules.pop(name, None)
    package = sys.modules.get("firmware.etp_node")
    leaf = name[name.rfind(".") + 1 :]
    if package is not None and hasattr(package, leaf):
        delattr(package, leaf)
