"""HIL rig: the firmware on a real MicroPython board (or a simulated one) against a real hub."""
