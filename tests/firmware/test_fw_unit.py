"""Firmware unit tests: scripts under tests/firmware/mp run by the MicroPython unix port."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firmware.conftest import MP_DIR, REPO, run_micropython

SCRIPTS = sorted(p.name for p in MP_DIR.glob("test_*.py"))

pytestmark = pytest.mark.micropython


def _check(result) -> None:
    failures = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    summary = [line for line in result.stdout.splitlines() if line.startswith("SUMMARY")]
    assert summary, f"no summary from micropython:\n{result.stdout}\n{result.stderr}"
    assert not failures and result.returncode == 0, result.stdout + result.stderr
    assert "passed=0 " not in summary[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_firmware_from_source(script: str, tmp_path: Path) -> None:
    """Each MicroPython test script passes against the .py sources."""
    _check(run_micropython(MP_DIR / script, [str(MP_DIR), str(REPO)], tmp_path))


@pytest.mark.parametrize("script", SCRIPTS)
def test_firmware_from_mpy(script: str, tmp_path: Path, mpy_image: Path) -> None:
    """The same scripts pass against the mpy-cross build (what boards run)."""
    _check(run_micropython(MP_DIR / script, [str(MP_DIR), str(mpy_image)], tmp_path))
