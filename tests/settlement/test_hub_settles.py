"""A trading hub pays its verified trades on the embedded ledger (LiteSVM with the real
program): every verified trade once, by exactly its amount, through a ledger outage too."""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from hub.runtime import HubRuntime
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.site import TOKEN_DECIMALS
from hub.store import TradeRow
from hub.store.models import SETTLEMENTS
from shared_etp.frame import Keyring, decode_frame
from shared_etp.schema import BID_ACCEPT, BID_CONFIRM, TERMINATE
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for

pytestmark = pytest.mark.slow

AGGREGATOR_DEPOSIT = 10**15  # what site set-up funds each aggregator's escrow with


def _cluster(hub: HubRuntime) -> EmbeddedCluster:
    assert hub.settlement is not None, hub.status()["settlement"]
    cluster = hub.settlement.cluster
    assert isinstance(cluster, EmbeddedCluster)
    return cluster


async def _verified(hub: HubRuntime) -> list[TradeRow]:
    assert hub.store is not None
    return await hub.store.list_trades("verified")


async def _counts(hub: HubRuntime) -> Counter[str]:
    assert hub.store is not None
    return Counter(row.status for row in await hub.store.list_settlements())


async def _wait_all_settled(hub: HubRuntime, timeout_s: float) -> list[TradeRow]:
    deadline = time.monotonic() + timeout_s
    while True:
        trades = await _verified(hub)
        counts = await _counts(hub)
        if counts["settled"] == len(trades) and sum(counts.values()) == len(trades):
            return trades
        if time.monotonic() > deadline:
            raise AssertionError(f"not all settled: {dict(counts)} of {len(trades)} verified")
        await asyncio.sleep(0.1)


def _check_evidence(hub: HubRuntime, trade: TradeRow, on_chain: Any) -> None:
    """The trade keeps the signed frames that verified it: the buyer's request (BidConfirm,
    or the Terminate that asked) and the battery's BidAccept of exactly these terms, both
    authentic under the battery's key; the record on the ledger holds sha256 of the two."""
    assert trade.evidence_request and trade.evidence_answer, f"trade {trade.id}: no evidence"
    assert hub.keyring is not None
    keyring = Keyring()
    keyring.add(trade.device_id, hub.keyring.device_key(trade.device_id))
    request = decode_frame(trade.evidence_request, keyring)
    answer = decode_frame(trade.evidence_answer, keyring)
    assert request["t"] in (BID_CONFIRM, TERMINATE) and request["src"] == trade.bidder_id
    assert request["dst"] == trade.device_id and request["auc"] == trade.auction_id
    assert answer["t"] == BID_ACCEPT and answer["src"] == trade.device_id
    assert (answer["dst"], answer["id"]) == (request["src"], request["id"])
    assert (answer["price"], answer["ereq"]) == (trade.price_mc, trade.energy_wh)
    digest = hashlib.sha256(trade.evidence_request + trade.evidence_answer).digest()
    assert bytes(on_chain) == digest


async def _check_ledger(
    hub: HubRuntime, trades: list[TradeRow], account_data: Any = None
) -> dict[str, Any]:
    """Every verified trade has its record with the program's amount; the market counted
    each trade once; escrows and sellers' accounts moved by exactly the traded amounts.
    `account_data(address)` reads an account (default: the embedded ledger's); balances are
    read through the hub's own cluster."""
    service = hub.settlement
    assert service is not None
    cluster: Any = service.cluster
    account_data = account_data or _cluster(hub).account_data
    assert service is not None
    site = service.site
    idl = site.idl
    amounts = {t.id: t.price_mc * t.energy_wh // 1000 for t in trades}  # program's rule
    for trade in trades:
        data = account_data(idl.trade_record_address(site.market, trade.auction_id, trade.id))
        assert data is not None, f"trade {trade.id} has no record on the ledger"
        name, record = idl.decode_account(data)
        assert name == "TradeRecord"
        assert (record["price_per_kwh"], record["energy_wh"], record["amount"]) == (
            trade.price_mc, trade.energy_wh, amounts[trade.id]
        )
        assert record["device_id"] == trade.device_id
        assert record["buyer"] == site.aggregator_party(trade.bidder_id).pubkey
        assert record["seller"] == site.battery_party(trade.device_id).pubkey
        _check_evidence(hub, trade, record["evidence_hash"])
    market_data = account_data(site.market)
    assert market_data is not None
    _, market = idl.decode_account(market_data)
    # none settled twice: the market counted exactly one settlement per verified trade
    assert market["trades_settled"] == len(trades)
    assert market["volume"] == sum(amounts.values())
    paid_by: Counter[int] = Counter()
    earned_by: Counter[int] = Counter()
    for trade in trades:
        paid_by[trade.bidder_id] += amounts[trade.id]
        earned_by[trade.device_id] += amounts[trade.id]
    for bidder, paid in paid_by.items():
        vault = site.aggregator_party(bidder).vault
        assert vault is not None
        assert await cluster.token_balance(vault) == AGGREGATOR_DEPOSIT - paid
    for device, earned in earned_by.items():
        account = site.battery_party(device).token_account
        assert await cluster.token_balance(account) == earned
    return market


def _report(label: str, trades: int, seconds: float, hub: HubRuntime) -> None:
    assert hub.settlement is not None
    stats = hub.settlement.stats
    per_tx = stats["trades_sent"] / max(1, stats["transactions"])
    print(
        f"\n{label}: {trades} trades settled in {seconds:.2f} s of trading+settling "
        f"({trades / seconds:.1f}/s); {stats['transactions']} transactions, "
        f"{per_tx:.2f} settlements per transaction, "
        f"{stats['compute_units'] / max(1, stats['trades_sent']):.0f} CU and "
        f"{stats['fee_lamports'] / max(1, stats['trades_sent']):.0f} lamports fee per trade"
    )


async def test_every_verified_trade_settles_once_by_its_amount(
    tmp_path: Path, program_file: Path
) -> None:
    settings = hub_settings(tmp_path, aggregators=3, settlement_program_file=program_file)
    async with running_hub(settings) as hub:
        status = hub.status()["settlement"]
        assert status["network"] == "embedded" and status["cluster"] is None
        started = time.monotonic()
        async with sim_fleet(settings, hub.mqtt_url, count=6):
            assert hub.auctions is not None
            engine = hub.auctions
            await wait_for(lambda: engine.totals.trades >= 15, 60, "15 trades")
            await engine.stop()
        trades = await _wait_all_settled(hub, 30)
        elapsed = time.monotonic() - started
        assert len(trades) >= 15
        await _check_ledger(hub, trades)
        _report("live hub", len(trades), elapsed, hub)
        # /api/v1/status counts (refreshed about once a second) catch up
        await wait_for(lambda: hub.status()["settlement"]["settled"] == len(trades), 5,
                       "status counts")
        key = await api_key(hub)
        code, body = await asyncio.to_thread(get_json, f"{hub.http_url}/api/v1/status", key)
        assert code == 200
        status = body["settlement"]
        assert status["network"] == "embedded" and status["cluster"] is None
        assert status["settled"] == len(trades)
        assert status["pending"] == status["submitted"] == status["failed"] == 0
        assert status["last_error"] is None
        # every row carries the signature of the transaction that paid it; each change an event
        assert hub.store is not None
        rows = await hub.store.list_settlements()
        assert all(row.signature for row in rows)
        events = await hub.read_events(kinds=["settlement_changed"], limit=10_000)
        settled_events = [e for e in events if e["payload"]["status"] == "settled"]
        assert sorted(e["payload"]["trade_id"] for e in settled_events) == sorted(
            t.id for t in trades
        )
        assert all(e["payload"]["signature"] for e in settled_events)
    # the keys are files only their owner can read
    for name in ("settler-keypair.json", "market-authority-keypair.json"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600, f"{name} has mode {oct(mode)}"


async def test_unverified_trade_is_never_paid(tmp_path: Path, program_file: Path) -> None:
    """An outbox row whose trade is not verified (it should not exist) is marked failed and
    nothing is paid for it; a verified one next to it settles."""
    settings = hub_settings(tmp_path, aggregators=1, settlement_program_file=program_file,
                            settlement_max_in_flight=4)
    async with running_hub(settings) as hub:
        store = hub.store
        assert store is not None and hub.settlement is not None
        made = []
        for device in (41, 42):
            auction = await store.open_auction(device_id=device, site=settings.site,
                                               mechanism="ascending", lot_wh=1000,
                                               reserve_mc=10_000, opened_ms=1)
            trade, _ = await store.record_trade(auction_id=auction, device_id=device,
                                                bidder_id=1001, price_mc=21_000, energy_wh=700,
                                                reserve_mc=10_000, confirmed_ms=2)
            made.append(trade)
        await store.resolve_trade(made[0].id, "verified")
        await store.resolve_trade(made[1].id, "unverified")
        async with store.sql.begin() as connection:  # a corrupt outbox: a row it must refuse
            await connection.execute(sa.insert(SETTLEMENTS), [
                {"trade_id": made[1].id, "status": "pending", "attempts": 0, "updated_ms": 1}
            ])
        await wait_for(lambda: hub.settlement is not None
                       and hub.settlement.counts["settled"] == 1
                       and hub.settlement.counts["failed"] == 1, 20, "one settled, one failed")
        rows = {row.trade_id: row for row in await store.list_settlements()}
        assert rows[made[0].id].status == "settled"
        assert rows[made[1].id].status == "failed"
        assert "not verified" in (rows[made[1].id].error or "")
        cluster = _cluster(hub)
        site = hub.settlement.site
        record = site.idl.trade_record_address(site.market, made[1].auction_id, made[1].id)
        assert cluster.account_data(record) is None
        assert await cluster.token_balance(site.battery_party(42).token_account) == 0
        assert await cluster.token_balance(site.battery_party(41).token_account) == (
            21_000 * 700 // 1000
        )
        assert TOKEN_DECIMALS == 5  # 1 base unit = 1 milli-cent: price_mc is the price
        # the operator is alerted (settlement_changed failed -> settlement_failed alert)
        await wait_for(lambda: bool(hub.alerts and hub.alerts.summary()["open"]), 10, "alert")
        raised = await hub.read_events(kinds=["alert_raised"])
        assert any(e["payload"].get("kind") == "settlement_failed" for e in raised), raised


async def test_ledger_outage_queues_then_settles_each_once(
    tmp_path: Path, program_file: Path
) -> None:
    settings = hub_settings(tmp_path, aggregators=3, settlement_program_file=program_file,
                            settlement_backoff_max_s=0.5)
    async with running_hub(settings) as hub:
        cluster = _cluster(hub)
        started = time.monotonic()
        async with sim_fleet(settings, hub.mqtt_url, count=6):
            assert hub.auctions is not None and hub.settlement is not None
            engine = hub.auctions
            await wait_for(lambda: engine.totals.trades >= 5, 60, "5 trades")
            await _wait_all_settled(hub, 20)
            cluster.unavailable = True  # the ledger goes away mid-run
            settled_before = (await _counts(hub))["settled"]
            service = hub.settlement
            # trading goes on; new verified trades wait in the outbox
            await wait_for(lambda: service.counts["pending"] + service.counts["submitted"] >= 8,
                           60, "8 trades verified during the outage waiting in the outbox")
            counts = await _counts(hub)
            assert counts["settled"] == settled_before  # nothing settled meanwhile
            assert counts["pending"] + counts["submitted"] >= 8
            assert hub.status()["settlement"]["last_error"]
            assert not service.available
            cluster.unavailable = False
            await engine.stop()
        trades = await _wait_all_settled(hub, 30)
        elapsed = time.monotonic() - started
        await _check_ledger(hub, trades)
        assert hub.settlement.stats["outages"] >= 1
        _report("outage run", len(trades), elapsed, hub)
