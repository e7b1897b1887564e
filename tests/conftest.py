"""Shared test fixtures: paths to the repo and to the MicroPython unix port."""

from pathlib import Path

import pytest

from hub.tools.firmware.binaries import ToolNotFoundError, micropython_binary

REPO = Path(__file__).resolve().parents[1]


def micropython_available() -> bool:
    """True when the MicroPython unix port is found (hub.tools.firmware.binaries decides)."""
    try:
        micropython_binary()
    except ToolNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def micropython() -> str:
    try:
        return micropython_binary()
    except ToolNotFoundError as exc:
        pytest.skip(f"the MicroPython unix port is not available: {exc}")
