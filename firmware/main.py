"""Board entry point (kept tiny: the board compiles it from source at every boot)."""

import gc

from firmware.etp_node.boot import boot

node = boot()
del boot  # boot-only code leaves the heap before the node runs
gc.collect()
node.run()
