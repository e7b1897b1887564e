"""Fixtures for the on-chain program: its build (skipped with the reason when the Debian
build tools are missing) and LiteSVM ledgers with it deployed through the upgradeable loader.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

ANCHOR_DIR = Path(__file__).resolve().parents[2] / "anchor"
sys.path.insert(0, str(ANCHOR_DIR / "tools"))


def load_anchor_script(name: str) -> ModuleType:
    """anchor/<name>.py as module etp_anchor_<name> (bare names like `build` are taken)."""
    module_name = f"etp_anchor_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, ANCHOR_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


sbf_build = load_anchor_script("build")

if TYPE_CHECKING:
    from svm_world import Party, World

SOLDERS_REASON = "solders (with LiteSVM) is not installed: it is a project dependency"


@pytest.fixture(scope="session")
def program_so(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The program built by anchor/build.py (once per session, into a temporary directory)."""
    try:
        sbf_build.find_toolchain()
    except sbf_build.BuildError as exc:
        pytest.skip(f"cannot build the on-chain program here: {exc}")
    out = tmp_path_factory.mktemp("sbf") / "etp_settlement.so"
    sbf_build.build(out, verbose=False)
    return out.read_bytes()


@pytest.fixture
def world(program_so: bytes) -> World:
    """A fresh ledger with the program deployed and a payment mint; no market yet."""
    pytest.importorskip("solders.litesvm", reason=SOLDERS_REASON)
    from svm_world import World

    return World(program_so)


class Market:
    """A market with one battery owner (devices 7 and 8) and one funded aggregator."""

    def __init__(self, world: World, deposit: int = 10_000_000) -> None:
        self.world = world
        world.must(world.initialize_market(dispute_window_seconds=3600))
        self.seller: Party = world.new_seller([7, 8])
        self.buyer: Party = world.new_buyer(deposit, max_price_per_kwh=1_000_000)


@pytest.fixture
def market(world: World) -> Market:
    return Market(world)
