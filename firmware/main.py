"""Board entry point (kept tiny: the board compiles it from source at every boot)."""

import gc
import sys

if sys.path[0][:1] == "/":
    # The unix port (simulated boards) puts this script's absolute directory first on the
    # path, and every module's __file__ (the whole path) would stay interned: import from the
    # working directory, the flash, as a board does.
    import os

    os.chdir(sys.path[0])
    sys.path[0] = ""
    del os

from firmware.etp_node.boot import boot

setup = boot()  # config, TLS context, audit tail; the node's code loaded
del boot  # each boot stage leaves the heap before the next one makes data
gc.collect()
from firmware.etp_node.assemble import assemble  # noqa: E402 (loaded by boot already)

node = assemble(*setup)
del assemble, setup
gc.collect()
node.run()
