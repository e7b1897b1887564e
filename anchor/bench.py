"""Compute units per instruction and settlements per transaction, measured on LiteSVM.

    python anchor/bench.py [--json PATH]

Builds the program (anchor/build.py), deploys it through the BPF Upgradeable Loader into
LiteSVM with the mainnet feature set, runs every instruction once, then settles growing
batches until the 1,232-byte transaction limit, in two shapes: every trade to a different
battery owner (worst case: three new accounts per trade) and all trades to one battery owner
(best case: one new account per trade). Prints a table and a JSON document.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ANCHOR_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(ANCHOR_DIR / "tools"))
sys.path.insert(0, str(ANCHOR_DIR))

import build as sbf_build  # noqa: E402
from etp_client import TradeInput  # noqa: E402
from solders.pubkey import Pubkey  # noqa: E402
from svm_world import TX_SIZE_LIMIT, Outcome, Party, World  # noqa: E402


def _trade(auction_id: int, trade_id: int, device_id: int) -> TradeInput:
    evidence = hashlib.sha256(f"{auction_id}/{trade_id}".encode()).digest()
    return TradeInput(auction_id, trade_id, device_id, 215_000, 2_500, evidence)


def measure_instructions(so: bytes) -> dict[str, int]:
    """Compute units each instruction consumed (the program's own line in the logs)."""
    world = World(so)
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


def measure_batches(so: bytes, distinct_sellers: bool) -> list[dict[str, Any]]:
    """Settle batches of 1, 2, ... trades until the next one would exceed 1,232 bytes."""
    world = World(so)
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
        outcome = world.settle(batch)
        if outcome.size > TX_SIZE_LIMIT or not outcome.ok:
            if not outcome.ok and outcome.size <= TX_SIZE_LIMIT:
                raise AssertionError(
                    f"batch of {size} failed: {outcome.error_name or outcome.error}"
                )
            break
        units = program_units(world, outcome)
        rows.append(
            {
                "trades": size,
                "tx_bytes": outcome.size,
                "program_cu": units,
                "cu_per_trade": round(units / size),
                "accounts": len(instruction.accounts),
            }
        )
    return rows


def measure_batches_with_lookup_table(so: bytes, max_trades: int = 40) -> list[dict[str, Any]]:
    """Distinct battery owners, v0 transactions: the recurring addresses (market, mint,
    programs, the buyer's escrow/vault/reputation, every seller's reputation and token
    account) come from one lookup table; each trade's new record address stays inline."""
    world = World(so)
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
        outcome = world.send_v0([instruction], world.settler, [table], 1_400_000)
        if outcome.size > TX_SIZE_LIMIT:
            break
        world.must(outcome)
        units = program_units(world, outcome)
        rows.append(
            {
                "trades": size,
                "tx_bytes": outcome.size,
                "program_cu": units,
                "cu_per_trade": round(units / size),
                "accounts": len(instruction.accounts),
            }
        )
    return rows


def main() -> int:
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
    batches = {
        "batches_distinct_sellers": measure_batches(so, distinct_sellers=True),
        "batches_one_seller": measure_batches(so, distinct_sellers=False),
        "batches_lookup_table": measure_batches_with_lookup_table(so),
    }
    results: dict[str, Any] = {
        "program_bytes": len(so),
        "instructions_cu": instructions_cu,
        **batches,
    }
    print(f"program: {len(so)} bytes (sBPF v0, upgradeable loader, mainnet features)")
    print(f"\n{'instruction':<50} {'CU':>8}")
    for name, units in instructions_cu.items():
        print(f"{name:<50} {units:>8}")
    for key, title in (
        ("batches_distinct_sellers", "each trade to a different battery owner"),
        ("batches_one_seller", "all trades to one battery owner"),
        ("batches_lookup_table", "different battery owners, v0 transaction + lookup table"),
    ):
        print(f"\nsettle_trades, {title} ({TX_SIZE_LIMIT}-byte limit):")
        print(f"{'trades':>6} {'tx bytes':>9} {'accounts':>9} {'program CU':>11} {'CU/trade':>9}")
        for row in batches[key]:
            print(
                f"{row['trades']:>6} {row['tx_bytes']:>9} {row['accounts']:>9} "
                f"{row['program_cu']:>11} {row['cu_per_trade']:>9}"
            )
    document = json.dumps(results, indent=2)
    print("\n" + document)
    if args.json:
        args.json.write_text(document + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
