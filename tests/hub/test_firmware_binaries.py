"""One lookup of the MicroPython unix port, overridable through ETP_MICROPYTHON (hub.settings)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from hub.tools.firmware.binaries import ToolNotFoundError, micropython_binary


def test_etp_micropython_names_the_binary_boards_and_tests_run(
    micropython: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tmp_path / "my-micropython"
    link.symlink_to(micropython)
    monkeypatch.setenv("ETP_MICROPYTHON", str(link))
    binary = micropython_binary()
    assert binary == str(link)
    ran = subprocess.run([binary, "-c", "print(6 * 7)"], capture_output=True, text=True, timeout=30)
    assert ran.stdout.strip() == "42"


def test_a_configured_binary_that_does_not_exist_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ETP_MICROPYTHON", str(tmp_path / "missing"))
    with pytest.raises(ToolNotFoundError, match="ETP_MICROPYTHON"):
        micropython_binary()
    # an explicit path wins over the environment
    assert micropython_binary(tmp_path) == str(tmp_path)
