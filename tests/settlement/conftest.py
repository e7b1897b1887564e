"""Fixtures for the settlement tests: the built on-chain program (anchor/target, else built
into a temporary directory; skipped with the reason when the Debian build tools are missing)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.settlement.program import PROGRAM_SO_PATH


@pytest.fixture(scope="session")
def program_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The etp_settlement program the embedded ledger deploys."""
    pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")
    if PROGRAM_SO_PATH.exists():
        return PROGRAM_SO_PATH
    from tests.anchor.conftest import sbf_build

    try:
        sbf_build.find_toolchain()
    except sbf_build.BuildError as exc:
        pytest.skip(f"cannot build the on-chain program here: {exc}")
    out = tmp_path_factory.mktemp("sbf") / "etp_settlement.so"
    sbf_build.build(out, verbose=False)
    return out
