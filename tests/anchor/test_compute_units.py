"""Compute units of every instruction (printed with -s; anchor/bench.py has the full
report): each stays far inside the default 200,000 CU budget of an instruction."""

from __future__ import annotations

import pytest

pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")

from tests.anchor.conftest import load_anchor_script

bench = load_anchor_script("bench")


def test_every_instruction_fits_the_default_budget(program_so: bytes) -> None:
    units = bench.measure_instructions(program_so)
    print()
    for name, value in units.items():
        print(f"{name:<50} {value:>7} CU")
    assert len(units) == 12
    assert all(0 < value < 20_000 for value in units.values())
