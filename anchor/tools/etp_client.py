"""The IDL-driven client of the etp_settlement program: it lives in the hub package
(hub/settlement/program.py, which the hub's settlement service uses); re-exported here for the
tools, the bench and the tests that import it by this name."""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:  # run as a script (python anchor/bench.py): the hub is next door
    sys.path.insert(1, _REPO)

from hub.settlement.program import IDL_PATH, Idl, IdlError, TradeInput, load_idl  # noqa: E402

__all__ = ["IDL_PATH", "Idl", "IdlError", "TradeInput", "load_idl"]
