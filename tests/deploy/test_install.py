"""deploy/install.sh and deploy/bin/etp-site: the shell is valid, bad arguments are refused
with a clear message before anything changes, and everything install.sh refers to exists.
(The install itself was run as root on Debian 12 by hand: docs/deployment.md.)"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "deploy" / "install.sh"


@pytest.mark.parametrize(
    "script", [INSTALL, REPO / "deploy" / "bin" / "etp-site"], ids=lambda p: p.name
)
def test_shell_syntax(script: Path) -> None:
    shell = "bash" if script.suffix == ".sh" else "sh"
    done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_every_script_is_executable() -> None:
    for script in [INSTALL, *(REPO / "deploy" / "bin").iterdir()]:
        assert script.stat().st_mode & 0o111, f"{script} is not executable"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "test"], "--env must be dev, staging or prod"),
        (["--workers", "two"], "--workers must be a number"),
        (["--bogus"], "unknown argument --bogus"),
    ],
)
def test_bad_arguments_are_refused_first(args: list[str], message: str) -> None:
    done = subprocess.run(
        ["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2 and message in done.stderr


def test_help_describes_the_install() -> None:
    done = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0
    for words in ("etp", "/etc/etp", "/var/lib/etp", "/opt/etp/releases"):
        assert words in done.stdout


def test_every_file_install_sh_copies_exists() -> None:
    text = INSTALL.read_text()
    for relative in re.findall(r'"\$src/([\w./-]+)"', text):
        if "$" not in relative:
            assert (REPO / relative).exists(), relative
    for environment in ("dev", "staging", "prod"):
        assert (REPO / "deploy" / "env" / f"{environment}.env").is_file()
    units = REPO / "deploy" / "systemd"
    assert sorted(p.suffix for p in units.iterdir() if p.is_file()) == sorted(
        [".path"] + [".service"] * 4
    ), "install.sh copies *.service and *.path: a unit of another type would be left out"
