"""Compute units per instruction and settlements per transaction, measured on LiteSVM.

    python anchor/bench.py [--json PATH]

Builds the program (anchor/build.py), deploys it through the BPF Upgradeable Loader into
LiteSVM with the mainnet feature set, runs every instruction once, then settles growing
batches until the 1,232-byte transaction limit, in three shapes: legacy transactions with
every trade to a different battery owner (three new addresses per trade), legacy with all
trades to one battery owner (one new address per trade), and v0 transactions whose recurring
addresses come from a lookup table — each with and without ComputeBudget instructions
(limit + priority fee). Keys are derived from a fixed seed, so a run is reproducible.
Prints tables and a JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ANCHOR_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(ANCHOR_DIR / "tools"))

from etp_client import TradeInput  # noqa: E402
from solders.pubkey import Pubkey  # noqa: E402
from svm_world import TX_SIZE_LIMIT, Outcome, Party, World  # noqa: E402


def _trade(auction_id: int, trade_id: int, device_id: int) -> TradeInput:
    evidence = hashlib.sha256(f"{auction_id}/{trade_id}".encode()).digest()
    return TradeInput(auction_id, trade_id, device_id, 215_000, 2_500, evidence)


def measure_instructions(so: bytes) -> dict[str, int]:
    """Compute units each instruction consumed (the program's own line in the logs)."""
    world = World(so, seed=1)
    units: dict[str, int] = {}

    def record(name: str, outcome: Outcome) -> None:
        world.must(outcome)
        units[name] = program_units(world, outcome)

    record("initialize_market", world.initialize_market(3600))
    seller_key = world.new_keypair()
    record("register_participant (battery owner, 2 devices)", world.register(seller_key, 0, [7, 8]))
    seller = Party(
        seller_key,
        world.create_token_account(seller_key.pubkey()),
        world.idl.reputation_address(world.market, seller_key.pubkey()),
        [7, 8],
    )
    buyer_key = world.new_keypair()
    record("register_participant (aggregator)", world.register(buyer_key, 1, []))
    buyer = Party(
        buyer_key,
        world.create_token_account(buyer_key.pubkey()),
        world.idl.reputation_address(world.market, buyer_key.pubkey()),
    )
    record("open_escrow (escrow + vault token account)", world.open_escrow(buyer_key, 10**6))
    world.mint_to(buyer.token_account, 10**12)
    record("fund", world.fund(buyer, 10**11))
    record("withdraw", world.withdraw(buyer, 10**9))
    record("settle_trades (1 trade)", world.settle([(_trade(1, 1, 7), buyer, seller)]))
    record("open_dispute", world.open_dispute(buyer_key, 1, 1))
    source = world.create_token_account(world.authority.pubkey())
    world.mint_to(source, 10**9)
    record(
        "resolve_dispute (refund)",
        world.resolve_dispute(world.authority, 1, 1, buyer, seller, 537_500, source),
    )
    world.must(world.settle([(_trade(1, 2, 7), buyer, seller)]))
    world.must(world.open_dispute(seller_key, 1, 2))
    record(
        "resolve_dispute (unfounded)",
        world.resolve_dispute(world.authority, 1, 2, buyer, seller, 0, source),
    )
    record("rotate_settler", world.admin("rotate_settler", {"new_settler": world.settler.pubkey()}))
    record("pause_market", world.admin("pause_market", {"paused": False}))
    return units


def program_units(world: World, outcome: Outcome) -> int:
    """Units the etp program consumed (its top-level 'consumed' log line, CPIs included)."""
    prefix = f"Program {world.program_id} consumed "
    for line in outcome.logs:
        if line.startswith(prefix):
            return int(line[len(prefix) :].split()[0])
    return outcome.compute_units


# Compute budget a mainnet sender would add: a limit sized to the batch and a priority fee
# (micro-lamports per CU). Without them the default 200,000 CU per instruction applies,
# which covers the largest batch that fits a transaction.
PRIORITY_LIMIT_CU = 300_000
PRIORITY_PRICE_MICRO_LAMPORTS = 1_000


def _budget(priority: bool) -> dict[str, int | None]:
    if priority:
        return {
            "compute_unit_limit": PRIORITY_LIMIT_CU,
            "compute_unit_price": PRIORITY_PRICE_MICRO_LAMPORTS,
        }
    return {"compute_unit_limit": None, "compute_unit_price": None}


def measure_batches(so: bytes, distinct_sellers: bool, priority: bool) -> list[dict[str, Any]]:
    """Settle batches of 1, 2, ... trades until the next one would exceed 1,232 bytes."""
    world = World(so, seed=1)
    world.must(world.initialize_market(3600))
    buyer = world.new_buyer(10**12, max_price_per_kwh=10**6)
    sellers = [world.new_seller([1])]
    rows: list[dict[str, Any]] = []
    auction = 0
    while True:
        auction += 1
        size = len(rows) + 1
        if distinct_sellers:
            while len(sellers) < size:
                sellers.append(world.new_seller([1]))
        batch = [
            (_trade(auction, i, 1), buyer, sellers[i if distinct_sellers else 0])
            for i in range(size)
        ]
        instruction = world.settle_instruction(batch)
        budget = _budget(priority)
        outcome = world.settle(
            batch,
            compute_unit_limit=budget["compute_unit_limit"],
            compute_unit_price=budget["compute_unit_price"],
        )
        if outcome.size > TX_SIZE_LIMIT or not outcome.ok:
            if not outcome.ok and outcome.size <= TX_SIZE_LIMIT:
                raise AssertionError(
                    f"batch of {size} failed: {outcome.error_name or outcome.error}"
                )
            break
        rows.append(_row(world, outcome, batch, len(instruction.accounts)))
    return rows


def measure_batches_with_lookup_table(
    so: bytes, priority: bool, max_trades: int = 16
) -> list[dict[str, Any]]:
    """Distinct battery owners, v0 transactions: the recurring addresses (market, mint,
    programs, the buyer's escrow/vault/reputation, every seller's reputation and token
    account) come from one lookup table; each trade's new record address stays inline."""
    world = World(so, seed=1)
    world.must(world.initialize_market(3600))
    buyer = world.new_buyer(10**12, max_price_per_kwh=10**6)
    sellers = [world.new_seller([1]) for _ in range(max_trades)]
    recurring = [
        world.market,
        world.mint,
        world.token_program,
        Pubkey.from_string("11111111111111111111111111111111"),
        world.escrow(buyer.pubkey),
        world.vault(buyer.pubkey),
        buyer.reputation,
    ]
    for seller in sellers:
        recurring += [seller.reputation, seller.token_account]
    table = world.create_lookup_table(recurring)
    rows: list[dict[str, Any]] = []
    for size in range(1, max_trades + 1):
        batch = [(_trade(1000 + size, i, 1), buyer, sellers[i]) for i in range(size)]
        instruction = world.settle_instruction(batch)
        outcome = world.send_v0([instruction], world.settler, [table], **_budget(priority))
        if outcome.size > TX_SIZE_LIMIT:
            break
        world.must(outcome)
        rows.append(_row(world, outcome, batch, len(instruction.accounts)))
    return rows


PDA_ATTEMPT_CU = 1_500  # the runtime's charge per bump tried by sol_try_find_program_address


def _row(world: World, outcome: Outcome, batch: list, accounts: int) -> dict[str, Any]:
    """One measured batch. The program's cost per trade depends on how many bumps the
    record's PDA search tries (1 for half of all addresses, 2 for a quarter, ...), so the
    row also gives the cost with that search taken out, which is the same for every trade."""
    units = program_units(world, outcome)
    attempts = 0
    for trade, _, _ in batch:
        record = world.idl.trade_record_address(world.market, trade.auction_id, trade.trade_id)
        attempts += 256 - world.decoded(record)["bump"]
    size = len(batch)
    return {
        "trades": size,
        "tx_bytes": outcome.size,
        "accounts": accounts,
        "program_cu": units,
        "cu_per_trade": round(units / size),
        "pda_attempts": attempts,
        "cu_per_trade_without_pda_search": round((units - PDA_ATTEMPT_CU * attempts) / size),
    }


def _load_build_module() -> ModuleType:
    """anchor/build.py under a name of its own (a bare `build` could be another package)."""
    if "etp_anchor_build" in sys.modules:
        return sys.modules["etp_anchor_build"]
    spec = importlib.util.spec_from_file_location("etp_anchor_build", ANCHOR_DIR / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["etp_anchor_build"] = module
    spec.loader.exec_module(module)
    return module


def main() -> int:
    sbf_build = _load_build_module()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            so = sbf_build.build(Path(tmp) / "etp_settlement.so", verbose=False).read_bytes()
        except sbf_build.BuildError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    instructions_cu = measure_instructions(so)
    shapes = {
        "legacy, each trade to a different battery owner": lambda p: measure_batches(so, True, p),
        "legacy, all trades to one battery owner": lambda p: measure_batches(so, False, p),
        "v0 + lookup table, different battery owners": lambda p: measure_batches_with_lookup_table(
            so, p
        ),
    }
    batches: dict[str, list[dict[str, Any]]] = {}
    for shape, run in shapes.items():
        batches[f"{shape}, default compute budget"] = run(False)
        batches[f"{shape}, with compute limit + priority fee"] = run(True)
    results: dict[str, Any] = {
        "program_bytes": len(so),
        "instructions_cu": instructions_cu,
        "batches": batches,
    }
    print(f"program: {len(so)} bytes (sBPF v0, upgradeable loader, mainnet features)")
    print(f"\n{'instruction':<50} {'CU':>8}")
    for name, units in instructions_cu.items():
        print(f"{name:<50} {units:>8}")
    for title, rows in batches.items():
        print(f"\nsettle_trades, {title} ({TX_SIZE_LIMIT}-byte limit):")
        print(
            f"{'trades':>6} {'tx bytes':>9} {'accounts':>9} {'program CU':>11} "
            f"{'CU/trade':>9} {'PDA tries':>10} {'CU/trade w/o search':>20}"
        )
        for row in rows:
            print(
                f"{row['trades']:>6} {row['tx_bytes']:>9} {row['accounts']:>9} "
                f"{row['program_cu']:>11} {row['cu_per_trade']:>9} {row['pda_attempts']:>10} "
                f"{row['cu_per_trade_without_pda_search']:>20}"
            )
    summary = {title: rows[-1]["trades"] for title, rows in batches.items()}
    results["settlements_per_transaction"] = summary
    print("\nsettlements per transaction:")
    for title, count in summary.items():
        print(f"  {count:>3}  {title}")
    document = json.dumps(results, indent=2)
    print("\n" + document)
    if args.json:
        args.json.write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
