"""The BESS node: battery state, energy holds, bid evaluation, audit log, MQTT client, tasks."""


def unload(leaf):
    """Drop a module of this package used only now and then (boot, connecting, audit recovery),
    named by its leaf name, so its code leaves the heap until it is next imported: a 64 KB heap
    has no room to keep it. (Its interned names stay: leaf names, not dotted constants.)"""
    import sys

    sys.modules.pop("firmware.etp_node." + leaf, None)
    package = sys.modules.get("firmware.etp_node")
    if package is not None and hasattr(package, leaf):
        delattr(package, leaf)
