"""Persistent node state on flash (boot epoch, energy figures): small, written atomically."""

import json
import os

STATE_FILE = "etp_state.json"


def load_state(path=STATE_FILE):
    """Persistent node state (boot epoch, counters) from flash; {} when absent or torn."""
    try:
        with open(path) as handle:
            return json.loads(handle.read())
    except (OSError, ValueError):
        return {}


def save_state(state, path=STATE_FILE):
    """Write state atomically: a temp file then rename, so power loss keeps old or new."""
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(state))
    os.rename(tmp, path)
