"""Shared test fixtures: paths to the repo and to the MicroPython unix port."""

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def micropython_binary() -> str | None:
    """The `micropython` command installed next to this interpreter, else one on PATH."""
    local = Path(sys.executable).with_name("micropython")
    if local.exists():
        return str(local)
    return shutil.which("micropython")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def micropython() -> str:
    binary = micropython_binary()
    if binary is None:
        pytest.skip("the MicroPython unix port is not installed (run scripts/setup.sh)")
    return binary
