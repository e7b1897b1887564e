"""Board entry point (kept tiny: the board compiles it from source at every boot)."""

from firmware.etp_node.boot import main

main()
