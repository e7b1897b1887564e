"""Settlement benchmark: verified trades (seeded straight into a store with their outbox rows)
settled by the SettlementService on the embedded ledger (LiteSVM with the real program):
time, settlements per transaction, compute units and fees per trade; the ledger is checked
afterwards (one record per trade, the market's count and volume)."""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from solders.keypair import Keypair

from hub.buyers.aggregator import FIRST_AGGREGATOR_ID
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.program import load_idl, read_program
from hub.settlement.service import SettlementService
from hub.settlement.site import Site
from hub.store import Store, database_url_for
from hub.store.models import AUCTIONS, SETTLEMENTS, TRADES

__all__ = ["SettleBenchResult", "format_table", "run_settle_bench", "seed_verified_trades"]

RECORD_RENT_LAMPORTS = 2_331_600  # a TradeRecord's rent exemption (207 bytes), paid by the settler


@dataclass(frozen=True)
class SettleBenchResult:
    """What one run measured."""

    trades: int
    sellers: int
    buyers: int
    setup_s: float
    settle_s: float
    settlements_per_s: float
    transactions: int
    settlements_per_transaction: float
    compute_units_per_trade: float
    compute_units_per_transaction: float
    fee_lamports_per_trade: float
    record_rent_lamports_per_trade: int
    lookup_table_addresses: int
    ledger_trades_settled: int
    ledger_volume: int
    expected_volume: int

    def as_dict(self) -> dict[str, Any]:
        """Plain dict for JSON output."""
        return asdict(self)


async def seed_verified_trades(store: Store, count: int, *, sellers: int, buyers: int,
                               seed: int = 1) -> int:
    """`count` cleared auctions with verified trades and pending outbox rows, in one
    transaction (as the hub leaves them); returns the total amount the program will pay."""
    rng = random.Random(seed)
    auctions, trades, outbox = [], [], []
    volume = 0
    for n in range(1, count + 1):
        device = 1 + rng.randrange(sellers)
        bidder = FIRST_AGGREGATOR_ID + 1 + rng.randrange(buyers)
        price = 20_000 + rng.randrange(10_001)
        energy = 100 * (1 + rng.randrange(10))
        volume += price * energy // 1000
        auctions.append({"id": n, "device_id": device, "site": "bench", "mechanism": "ascending",
                         "lot_wh": energy, "reserve_mc": 18_000, "status": "cleared",
                         "clearing_price_mc": price, "winner_id": bidder, "energy_wh": energy,
                         "opened_ms": 1_000_000 + n, "closed_ms": 1_000_001 + n})
        trades.append({"id": n, "auction_id": n, "device_id": device, "bidder_id": bidder,
                       "price_mc": price, "energy_wh": energy, "reserve_mc": 18_000,
                       "confirmed_ms": 1_000_001 + n, "status": "verified"})
        outbox.append({"trade_id": n, "status": "pending", "attempts": 0, "updated_ms": 1})
    async with store.sql.begin() as connection:
        await connection.execute(sa.insert(AUCTIONS), auctions)
        await connection.execute(sa.insert(TRADES), trades)
        await connection.execute(sa.insert(SETTLEMENTS), outbox)
    return volume


async def run_settle_bench(trades: int = 1000, sellers: int = 100, buyers: int = 3,
                           program: Path | None = None) -> SettleBenchResult:
    """Seed, set the site up (market, escrows, every battery owner), then settle everything."""
    with tempfile.TemporaryDirectory(prefix="etp-bench-settle-") as scratch:
        async with Store(database_url_for(Path(scratch))) as store:
            expected = await seed_verified_trades(store, trades, sellers=sellers, buyers=buyers)
            began = time.perf_counter()
            cluster = EmbeddedCluster(read_program(program))
            site = Site(cluster, load_idl(cluster.program_id), Keypair(), Keypair())
            aggregators = [FIRST_AGGREGATOR_ID + 1 + i for i in range(buyers)]
            await site.set_up(aggregators)
            for device in range(1, sellers + 1):
                await site.ensure_battery(device)
            service = SettlementService(store, cluster, site, site_name="bench",
                                        aggregator_ids=aggregators)
            started = time.perf_counter()
            for _ in range(100 * trades):  # bounded: a round settles a batch or more
                await service.settle_round()
                counts = service.counts
                await service._refresh_counts(force=True)
                if counts["settled"] + counts["failed"] >= trades:
                    break
            settle_s = time.perf_counter() - started
            if service.counts["settled"] != trades:
                raise RuntimeError(f"not everything settled: {service.counts}, "
                                   f"last error {service.last_error}")
            market_data = cluster.account_data(site.market)
            assert market_data is not None
            _, market = site.idl.decode_account(market_data)
    stats = service.stats
    sent = max(1, stats["trades_sent"])
    return SettleBenchResult(
        trades=trades,
        sellers=sellers,
        buyers=buyers,
        setup_s=round(started - began, 3),
        settle_s=round(settle_s, 3),
        settlements_per_s=round(trades / settle_s, 1),
        transactions=stats["transactions"],
        settlements_per_transaction=round(stats["trades_sent"] / max(1, stats["transactions"]), 2),
        compute_units_per_trade=round(stats["compute_units"] / sent),
        compute_units_per_transaction=round(stats["compute_units"] / max(1, stats["transactions"])),
        fee_lamports_per_trade=round(stats["fee_lamports"] / sent),
        record_rent_lamports_per_trade=RECORD_RENT_LAMPORTS,
        lookup_table_addresses=service.tables.stats["addresses"] if service.tables else 0,
        ledger_trades_settled=market["trades_settled"],
        ledger_volume=market["volume"],
        expected_volume=expected,
    )


def format_table(result: SettleBenchResult) -> str:
    """The result as an aligned two-column table."""
    rows = [
        ("trades settled", f"{result.trades:,}"),
        ("battery owners / aggregators", f"{result.sellers} / {result.buyers}"),
        ("site set-up (deploy, market, wallets) s", f"{result.setup_s:.2f}"),
        ("settlement s", f"{result.settle_s:.2f}"),
        ("settlements/s", f"{result.settlements_per_s:,.1f}"),
        ("transactions", f"{result.transactions:,}"),
        ("settlements per transaction", f"{result.settlements_per_transaction:.2f}"),
        ("compute units per trade", f"{result.compute_units_per_trade:,.0f}"),
        ("compute units per transaction", f"{result.compute_units_per_transaction:,.0f}"),
        ("fee per trade (lamports)", f"{result.fee_lamports_per_trade:,.0f}"),
        ("record rent per trade (lamports)", f"{result.record_rent_lamports_per_trade:,}"),
        ("addresses in lookup tables", f"{result.lookup_table_addresses:,}"),
        ("ledger: trades settled / volume", f"{result.ledger_trades_settled:,} / "
                                            f"{result.ledger_volume:,}"),
        ("expected volume (mc)", f"{result.expected_volume:,}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "settlement benchmark (embedded ledger)\n" + "\n".join(
        f"  {name:<{width}}  {value:>16}" for name, value in rows
    )
