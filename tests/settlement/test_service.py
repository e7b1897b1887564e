"""The settlement service on the embedded ledger without a hub: lost transactions re-signed
only after expiry, a restart that finds 'submitted' rows, a trade the program refuses, the
bench and `etp settle status`."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from solders.keypair import Keypair
from typer.testing import CliRunner

from hub.buyers.aggregator import FIRST_AGGREGATOR_ID
from hub.cli.main import app
from hub.events import EventKind
from hub.settlement.cluster import ClusterUnavailableError
from hub.settlement.embedded import BLOCKHASH_LIFETIME_BLOCKS, EmbeddedCluster
from hub.settlement.program import load_idl
from hub.settlement.service import SettlementConfig, SettlementService
from hub.settlement.site import Site
from hub.store import Store, database_url_for
from hub.store.models import AUCTIONS, SETTLEMENTS, TRADES
from hub.tools.bench.settle import run_settle_bench, seed_verified_trades

BUYERS = [FIRST_AGGREGATOR_ID + 1, FIRST_AGGREGATOR_ID + 2]


def _service(store: Store, cluster: EmbeddedCluster, site: Site,
             events: list[dict[str, Any]] | None = None) -> SettlementService:
    def emit(kind: EventKind, **fields: Any) -> None:
        if events is not None:
            events.append({"kind": kind, **fields})

    return SettlementService(store, cluster, site, site_name="t", aggregator_ids=BUYERS,
                             emit=emit, config=SettlementConfig(linger_ms=0))


def _ledger(program_file: Path) -> tuple[EmbeddedCluster, Site]:
    cluster = EmbeddedCluster(program_file.read_bytes())
    return cluster, Site(cluster, load_idl(cluster.program_id), Keypair(), Keypair())


async def _rounds(service: SettlementService, rounds: int = 50) -> Counter[str]:
    for _ in range(rounds):
        await service.settle_round()
    return Counter(row.status for row in await service.store.list_settlements())


def _market(cluster: EmbeddedCluster, site: Site) -> dict[str, Any]:
    data = cluster.account_data(site.market)
    assert data is not None
    return site.idl.decode_account(data)[1]


async def test_lost_transaction_is_resigned_only_after_its_blockhash_expired(
    tmp_path: Path, program_file: Path
) -> None:
    async with Store(database_url_for(tmp_path)) as store:
        volume = await seed_verified_trades(store, 12, sellers=3, buyers=2)
        cluster, site = _ledger(program_file)
        service = _service(store, cluster, site)
        await site.set_up(BUYERS)
        for device in (1, 2, 3):
            await site.ensure_battery(device)
        cluster.drop_sends = 1_000  # from now on every transaction is lost on the way
        await service.settle_round()
        await service.settle_round()
        rows = await store.list_settlements()
        assert {row.status for row in rows} == {"submitted"}
        first_signatures = {row.signature for row in rows}
        # not expired yet: the service waits (re-broadcasting the same bytes), never re-signs
        await _rounds(service, 5)
        assert {row.signature for row in await store.list_settlements()} == first_signatures
        assert service.stats["resigned"] == 0
        cluster.drop_sends = 0
        cluster.skip_blocks(BLOCKHASH_LIFETIME_BLOCKS + 1)  # now they can never land
        counts = await _rounds(service, 10)
        assert counts == Counter({"settled": 12})
        assert service.stats["resigned"] == 12
        rows = await store.list_settlements()
        assert all(row.attempts == 2 for row in rows)
        assert not {row.signature for row in rows} & first_signatures
        market = _market(cluster, site)
        assert (market["trades_settled"], market["volume"]) == (12, volume)


async def test_restart_checks_submitted_rows_before_sending_again(
    tmp_path: Path, program_file: Path
) -> None:
    """A hub stopped after sending: the next service finds 'submitted' rows whose
    transactions landed; it marks them settled and pays nothing twice."""
    async with Store(database_url_for(tmp_path)) as store:
        volume = await seed_verified_trades(store, 10, sellers=4, buyers=2)
        cluster, site = _ledger(program_file)
        first = _service(store, cluster, site)
        await site.set_up(BUYERS)
        assert await first._submit() == 10  # sent and landed, not yet tracked: "crash" here
        assert Counter(r.status for r in await store.list_settlements()) == {"submitted": 10}
        cluster._history.clear()  # the signatures are not found either: records decide
        events: list[dict[str, Any]] = []
        second = _service(store, cluster, site, events)
        counts = await _rounds(second, 5)
        assert counts == Counter({"settled": 10})
        assert second.stats["transactions"] == 0  # nothing was sent again
        market = _market(cluster, site)
        assert (market["trades_settled"], market["volume"]) == (10, volume)
        assert sorted(e["trade_id"] for e in events if e["status"] == "settled") == list(
            range(1, 11)
        )


async def test_trade_the_program_refuses_fails_alone(tmp_path: Path, program_file: Path) -> None:
    """A trade larger than its buyer's escrow: that trade fails with the program's error, the
    others of its batch settle."""
    async with Store(database_url_for(tmp_path)) as store:
        await seed_verified_trades(store, 6, sellers=1, buyers=1)
        bidder = FIRST_AGGREGATOR_ID + 1
        async with store.sql.begin() as connection:
            await connection.execute(sa.insert(AUCTIONS), [{
                "id": 7, "device_id": 1, "site": "bench", "mechanism": "ascending",
                "lot_wh": 1000, "reserve_mc": 1, "status": "cleared", "clearing_price_mc": 1,
                "winner_id": bidder, "energy_wh": 1000, "opened_ms": 1, "closed_ms": 2}])
            await connection.execute(sa.insert(TRADES), [{
                "id": 7, "auction_id": 7, "device_id": 1, "bidder_id": bidder,
                "price_mc": 10**9, "energy_wh": 2 * 10**9, "reserve_mc": 1,
                "confirmed_ms": 2, "status": "verified"}])  # 2e15 > the 1e15 deposit
            await connection.execute(sa.insert(SETTLEMENTS), [
                {"trade_id": 7, "status": "pending", "attempts": 0, "updated_ms": 1}])
        cluster, site = _ledger(program_file)
        events: list[dict[str, Any]] = []
        service = _service(store, cluster, site, events)
        counts = await _rounds(service, 5)
        assert counts == Counter({"settled": 6, "failed": 1})
        failed = [r for r in await store.list_settlements() if r.status == "failed"]
        assert failed[0].trade_id == 7 and "InsufficientEscrow (6013)" in (failed[0].error or "")
        assert _market(cluster, site)["trades_settled"] == 6
        assert any(e["status"] == "failed" and e["trade_id"] == 7 and e["error"] for e in events)


async def test_bench_settles_everything_and_checks_the_ledger(program_file: Path) -> None:
    result = await run_settle_bench(trades=60, sellers=10, buyers=2, program=program_file)
    assert result.ledger_trades_settled == 60
    assert result.ledger_volume == result.expected_volume
    assert result.settlements_per_transaction >= 4  # legacy transactions: 4-7 fit
    print(f"\nbench (60 trades): {result.settlements_per_s} settlements/s, "
          f"{result.settlements_per_transaction} per transaction, "
          f"{result.compute_units_per_trade} CU per trade")


def test_settle_status_command(tmp_path: Path, program_file: Path) -> None:
    async def settle_five() -> None:
        async with Store(database_url_for(tmp_path)) as store:
            await seed_verified_trades(store, 5, sellers=2, buyers=2)
            cluster, site = _ledger(program_file)
            await _rounds(_service(store, cluster, site), 5)

    asyncio.run(settle_five())
    runner = CliRunner()
    result = runner.invoke(app, ["settle", "status", "--data-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.output)
    assert view["counts"] == {"pending": 0, "submitted": 0, "settled": 5, "failed": 0,
                              "disputed": 0, "refunded": 0, "upheld": 0}
    assert all(row["signature"] for row in view["latest"])
    table = runner.invoke(app, ["settle", "status", "--data-dir", str(tmp_path)])
    assert "settled 5" in table.output


async def test_outage_while_tracking_keeps_the_transactions_tracked(
    tmp_path: Path, program_file: Path
) -> None:
    async with Store(database_url_for(tmp_path)) as store:
        volume = await seed_verified_trades(store, 8, sellers=2, buyers=2)
        cluster, site = _ledger(program_file)
        service = _service(store, cluster, site)
        await site.set_up(BUYERS)
        sent = await service._submit()
        transactions = service.stats["transactions"]
        assert sent == 8
        cluster.unavailable = True
        for _ in range(3):
            with pytest.raises(ClusterUnavailableError):
                await service.settle_round()
        assert Counter(r.status for r in await store.list_settlements()) == {"submitted": 8}
        cluster.unavailable = False
        assert await _rounds(service, 3) == Counter({"settled": 8})
        assert service.stats["transactions"] == transactions  # nothing signed again
        market = _market(cluster, site)
        assert (market["trades_settled"], market["volume"]) == (8, volume)
