"""ETP firmware: the battery (BESS) node that runs on MicroPython boards and the unix port."""
