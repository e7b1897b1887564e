"""Simulated board's machine module: reset() asks the pty bridge for a hard reset."""


def reset():
    """Hard reset: the bridge sees the marker, restarts the node from main.py."""
    import sys

    with open(".etp_reset", "w") as handle:
        handle.write("1")
    sys.exit(0)


def soft_reset():
    """Soft reset: end this interpreter; the bridge prints "soft reboot" and restarts it."""
    import sys

    sys.exit(0)
