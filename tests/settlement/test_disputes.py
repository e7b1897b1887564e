"""Disputes of settled trades end to end: a running hub with its embedded ledger (LiteSVM with
the real program), the gateway's operator routes, and `etp settle dispute/resolve` against it."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from solders.keypair import Keypair
from typer.testing import CliRunner

from hub.auth import Role
from hub.cli.settle import app as settle_app
from hub.runtime import HubRuntime
from hub.settlement.embedded import EmbeddedCluster
from hub.settlement.onboard import register
from hub.settlement.program import TradeInput
from hub.settlement.service import _Item, trade_evidence_hash
from hub.settlement.site import Site
from hub.store import TradeRow
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, wait_for

pytestmark = pytest.mark.slow

BUYER = 1001  # the one aggregator of these hubs
PRICE_MC, ENERGY_WH = 21_000, 700
AMOUNT_MC = PRICE_MC * ENERGY_WH // 1000  # what the program pays: 14,700 mc


def _settings(tmp_path: Path, program_file: Path, **overrides: Any) -> Any:
    return hub_settings(
        tmp_path,
        aggregators=1,
        settlement_program_file=program_file,
        settlement_linger_ms=0,
        **overrides,
    )


async def _trade(hub: HubRuntime, device: int, *, verified: bool = True) -> TradeRow:
    """A trade of the aggregator with battery `device`, as the market records it."""
    store = hub.store
    assert store is not None
    auction = await store.open_auction(
        device_id=device,
        site=hub.settings.site,
        mechanism="ascending",
        lot_wh=1000,
        reserve_mc=10_000,
        opened_ms=1,
    )
    trade, _ = await store.record_trade(
        auction_id=auction,
        device_id=device,
        bidder_id=BUYER,
        price_mc=PRICE_MC,
        energy_wh=ENERGY_WH,
        reserve_mc=10_000,
        confirmed_ms=2,
    )
    if verified:
        await store.resolve_trade(trade.id, "verified")
    return trade


async def _status(hub: HubRuntime, trade_id: int) -> str:
    assert hub.store is not None
    rows = {row.trade_id: row for row in await hub.store.list_settlements()}
    return rows[trade_id].status if trade_id in rows else "none"


async def _settled(hub: HubRuntime, trade: TradeRow) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while await _status(hub, trade.id) != "settled":
        assert asyncio.get_running_loop().time() < deadline, "trade not settled in 20 s"
        await asyncio.sleep(0.1)


def _post(hub: HubRuntime, key: str, trade_id: int, action: str, body: dict[str, Any]) -> Any:
    url = f"{hub.http_url}/api/v1/settlements/{trade_id}/{action}"
    return asyncio.to_thread(get_json, url, key, method="POST", body=body, timeout=30)


async def _events(hub: HubRuntime, trade_id: int) -> list[dict[str, Any]]:
    assert hub.events is not None
    await asyncio.sleep(0.3)  # the event log writes in batches
    events = await hub.read_events(kinds=["settlement_changed"], limit=10_000)
    return [e["payload"] for e in events if e["payload"]["trade_id"] == trade_id]


def _reputation(hub: HubRuntime, owner: Any) -> dict[str, Any]:
    service = hub.settlement
    assert service is not None and isinstance(service.cluster, EmbeddedCluster)
    site = service.site
    data = service.cluster.account_data(site.idl.reputation_address(site.market, owner))
    assert data is not None
    return site.idl.decode_account(data)[1]


async def test_buyer_dispute_then_refund(tmp_path: Path, program_file: Path) -> None:
    """Dispute by the buyer -> 'disputed' event and row; a refund moves exactly that much back
    into the buyer's escrow and costs the seller reputation; wrong steps answer 4xx."""
    async with running_hub(_settings(tmp_path, program_file)) as hub:
        service = hub.settlement
        assert service is not None
        trade = await _trade(hub, 41)
        await _settled(hub, trade)
        operator = await api_key(hub, Role.OPERATOR)
        viewer = await api_key(hub, Role.VIEWER)

        code, body = await _post(hub, viewer, trade.id, "dispute", {"by": "buyer"})
        assert code == 403 and "operator" in body["detail"]
        code, body = await _post(hub, operator, 999_999, "dispute", {"by": "buyer"})
        assert code == 404 and "no trade 999999" in body["detail"]

        code, body = await _post(
            hub, operator, trade.id, "dispute", {"by": "buyer", "reason": "meter says 500 Wh"}
        )
        assert code == 200, body
        assert body["status"] == "disputed" and body["by"] == "buyer" and body["signature"]
        assert await _status(hub, trade.id) == "disputed"
        events = await _events(hub, trade.id)
        assert [e["status"] for e in events][-1] == "disputed"
        assert events[-1]["reason"] == "meter says 500 Wh"
        assert events[-1]["actor"]["name"].startswith("test-operator")

        code, body = await _post(hub, operator, trade.id, "dispute", {"by": "seller"})
        assert code == 409 and "DisputeNotAllowed" in body["detail"], body

        site = service.site
        buyer, seller = site.aggregator_party(BUYER), site.battery_party(41)
        assert buyer.vault is not None
        vault_before = await service.cluster.token_balance(buyer.vault)
        assert await service.cluster.token_balance(seller.token_account) == AMOUNT_MC
        code, body = await _post(hub, operator, trade.id, "resolve", {"refund_mc": AMOUNT_MC + 1})
        assert code == 409 and "RefundTooLarge" in body["detail"], body
        code, body = await _post(hub, operator, trade.id, "resolve", {"refund_mc": 5_000})
        assert code == 200, body
        assert body["status"] == "refunded" and body["refund_mc"] == 5_000
        assert body["penalised"] == "seller"
        # exactly the refund back into the buyer's escrow; the seller keeps what it was paid
        assert await service.cluster.token_balance(buyer.vault) == vault_before + 5_000
        assert await service.cluster.token_balance(seller.token_account) == AMOUNT_MC
        seller_rep = _reputation(hub, seller.pubkey)
        assert (seller_rep["disputes_lost"], seller_rep["score"]) == (1, 1 - 10)
        buyer_rep = _reputation(hub, buyer.pubkey)
        assert (buyer_rep["disputes_opened"], buyer_rep["disputes_lost"]) == (1, 0)
        assert await _status(hub, trade.id) == "refunded"
        assert [e["status"] for e in await _events(hub, trade.id)][-2:] == ["disputed", "refunded"]

        code, body = await _post(hub, operator, trade.id, "resolve", {"refund_mc": 0})
        assert code == 409 and "NoOpenDispute" in body["detail"], body
        await wait_for(lambda: hub.status()["settlement"]["refunded"] == 1, 5, "status counts")
        status = hub.status()["settlement"]
        assert status["disputed"] == 0 and status["settled"] == 0


async def test_refusals_are_clear(tmp_path: Path, program_file: Path) -> None:
    """Not settled yet, not verified, past the window, a party the hub holds no key for:
    409 with the reason; the row is unchanged."""
    async with running_hub(_settings(tmp_path, program_file, settlement_dispute_window_s=1)) as hub:
        service = hub.settlement
        assert service is not None and isinstance(service.cluster, EmbeddedCluster)
        operator = await api_key(hub, Role.OPERATOR)

        late = await _trade(hub, 41)
        await _settled(hub, late)
        unverified = await _trade(hub, 42, verified=False)
        code, body = await _post(hub, operator, unverified.id, "dispute", {"by": "buyer"})
        assert code == 409 and "only settled trades" in body["detail"], body

        # a ledger outage: a verified trade waits in the outbox, not settled yet
        service.cluster.unavailable = True
        waiting = await _trade(hub, 43)
        code, body = await _post(hub, operator, waiting.id, "dispute", {"by": "buyer"})
        assert code == 409 and "not settled yet" in body["detail"], body
        service.cluster.unavailable = False
        await _settled(hub, waiting)

        # the market's window is 1 s: settled more than 1 s ago is too late
        await asyncio.sleep(2.5)
        code, body = await _post(hub, operator, late.id, "dispute", {"by": "seller"})
        assert code == 409 and "DisputeWindowClosed" in body["detail"], body
        assert await _status(hub, late.id) == "settled"

        # a battery owner with its own wallet (not a key the hub derives): the hub cannot
        # sign its dispute
        outsider = await _settle_for_outsider(hub, device=44)
        code, body = await _post(hub, operator, outsider.id, "dispute", {"by": "seller"})
        assert code == 409 and "holds no key for the seller" in body["detail"], body


async def _settle_for_outsider(hub: HubRuntime, device: int) -> TradeRow:
    """A trade paid to a battery owner that registered its own key on the ledger: the test
    settles it with the hub's settler key; the hub then finds its record (already paid)."""
    service = hub.settlement
    assert service is not None and isinstance(service.cluster, EmbeddedCluster)
    site, cluster = service.site, service.cluster
    assert isinstance(site, Site)
    owner = Keypair()
    await cluster.airdrop(owner.pubkey(), 10**9)
    # the owner's own transaction; the hub does not hold its key
    seller = await register(cluster, site.view, owner, aggregator=False, device_ids=[device])
    seller = dataclasses.replace(seller, keypair=None)
    trade = await _trade(hub, device, verified=False)
    verified = dataclasses.replace(trade, status="verified")
    item = _Item(
        verified,
        site.idl.trade_record_address(site.market, trade.auction_id, trade.id),
        await site.ensure_aggregator(BUYER),
        seller,
        TradeInput(
            trade.auction_id,
            trade.id,
            device,
            PRICE_MC,
            ENERGY_WH,
            trade_evidence_hash(hub.settings.site, verified),
        ),
    )
    recent = await cluster.latest_blockhash()
    signature = await cluster.send(service._transaction([item], recent.blockhash, 400_000, 0))
    (state,) = await cluster.signature_states([signature])
    assert state.confirmation and state.err is None, state
    assert hub.store is not None
    await hub.store.resolve_trade(trade.id, "verified")  # the hub's outbox finds it paid
    await _settled(hub, trade)
    return trade


async def test_cli_disputes_and_resolves_through_the_running_hub(
    tmp_path: Path, program_file: Path
) -> None:
    """`etp settle dispute` / `resolve` against the live gateway, and `etp settle status`."""
    async with running_hub(_settings(tmp_path, program_file)) as hub:
        trade = await _trade(hub, 41)
        await _settled(hub, trade)
        operator = await api_key(hub, Role.OPERATOR)
        viewer = await api_key(hub, Role.VIEWER)
        runner = CliRunner()

        def run(*args: str, key: str | None = operator) -> Any:
            extra = ["--url", hub.http_url] + (["--api-key", key] if key else [])
            return asyncio.to_thread(
                runner.invoke,
                settle_app,
                [*args, *extra],
                env={"ETP_API_KEY": "", "ETP_API_URL": ""},
            )

        result = await run("dispute", str(trade.id), "--by", "buyer", key=viewer)
        assert result.exit_code == 1 and "operator key" in result.output, result.output
        result = await run("dispute", str(trade.id), key=None)
        assert result.exit_code == 1 and "--api-key" in result.output, result.output
        result = await run("dispute", str(trade.id), "--by", "seller", "--reason", "short")
        assert result.exit_code == 0, result.output
        assert f"trade {trade.id} disputed by the seller" in result.output
        result = await run("resolve", str(trade.id), "--refund", "10", "--unfounded")
        assert result.exit_code == 2 and "exactly one" in result.output
        result = await run("resolve", str(trade.id), "--unfounded")
        assert result.exit_code == 0, result.output
        assert "unfounded" in result.output and "seller loses reputation" in result.output
        result = await run("resolve", str(trade.id), "--full-refund")
        assert result.exit_code == 1 and "NoOpenDispute" in result.output, result.output
        assert await _status(hub, trade.id) == "upheld"
        seller = hub.settlement.site.battery_party(41) if hub.settlement else None
        assert seller is not None and _reputation(hub, seller.pubkey)["disputes_lost"] == 1

        status = await asyncio.to_thread(
            runner.invoke, settle_app, ["status", "--data-dir", str(tmp_path)]
        )
        assert status.exit_code == 0, status.output
        assert "disputes: open 0  resolved 1 (refunded 0, upheld 1)" in status.output

        # no hub at that address: a clear message
        result = await asyncio.to_thread(
            runner.invoke,
            settle_app,
            ["dispute", "1", "--url", "http://127.0.0.1:9", "--api-key", operator],
        )
        assert result.exit_code == 1 and "no hub answers" in result.output, result.output


async def test_registered_market_the_hub_holds_no_party_or_authority_key(
    tmp_path: Path, program_file: Path
) -> None:
    """A market its authority made, parties with their own wallets (devnet/mainnet style): the
    hub settles with its settler key only, so it can neither open a dispute for a party nor
    resolve one; it says so (409) and changes nothing."""
    from solders.account import Account
    from solders.token import ID as TOKEN_PROGRAM

    from hub.settlement.disputes import DisputeError
    from hub.settlement.ledger import associated_token_address
    from hub.settlement.onboard import deposit, init_market
    from hub.settlement.program import load_idl, read_program
    from hub.settlement.registered import RegisteredSite
    from hub.settlement.service import SettlementConfig, SettlementService
    from hub.store import Store, database_url_for
    from tests.settlement.test_rpc import _mint_data, _token_account_data

    cluster = EmbeddedCluster(read_program(program_file))
    idl = load_idl(cluster.program_id)
    mint, authority, settler = Keypair().pubkey(), Keypair(), Keypair()
    aggregator, owner = Keypair(), Keypair()
    cluster.svm.set_account(mint, Account(10**9, _mint_data(6, 10**15), TOKEN_PROGRAM))
    for key in (authority, settler, aggregator, owner):
        await cluster.airdrop(key.pubkey(), 10 * 10**9)
    market = await init_market(cluster, idl, authority, mint, settler.pubkey(), 3600)
    ata = associated_token_address(aggregator.pubkey(), mint, TOKEN_PROGRAM)
    tokens = _token_account_data(mint, aggregator.pubkey(), 10**12)
    cluster.svm.set_account(ata, Account(2_039_280, tokens, TOKEN_PROGRAM))
    await register(cluster, market, aggregator, aggregator=True, device_ids=[])
    await deposit(cluster, market, aggregator, 10**12)
    await register(cluster, market, owner, aggregator=False, device_ids=[7])
    wallets = {("aggregator", BUYER): str(aggregator.pubkey()), ("battery", 7): str(owner.pubkey())}

    async def lookup(role: str, party_id: int) -> str | None:
        return wallets.get((role, party_id))

    site = RegisteredSite(cluster, idl, settler, market.address, lookup)
    async with Store(database_url_for(tmp_path)) as store:
        auction = await store.open_auction(
            device_id=7,
            site="s",
            mechanism="ascending",
            lot_wh=1000,
            reserve_mc=10_000,
            opened_ms=1,
        )
        trade, _ = await store.record_trade(
            auction_id=auction,
            device_id=7,
            bidder_id=BUYER,
            price_mc=PRICE_MC,
            energy_wh=ENERGY_WH,
            reserve_mc=10_000,
            confirmed_ms=2,
        )
        await store.resolve_trade(trade.id, "verified")
        service = SettlementService(
            store,
            cluster,
            site,
            site_name="s",
            aggregator_ids=[BUYER],
            config=SettlementConfig(linger_ms=0),
        )
        for _ in range(50):
            await service.settle_round()
        assert [row.status for row in await store.list_settlements()] == ["settled"]
        # the reputation notice reads the aggregator's own wallet's account here too
        await service.reputation.refresh()
        assert service.reputation.standings[BUYER].trades == 1
        for by in ("buyer", "seller"):
            with pytest.raises(DisputeError) as refused:
                await service.disputes.open(trade.id, by)  # type: ignore[arg-type]
            assert refused.value.status == 409
            assert f"holds no key for the {by}" in str(refused.value)
        with pytest.raises(DisputeError) as refused:
            await service.disputes.resolve(trade.id, 0)
        assert refused.value.status == 409 and "authority" in str(refused.value)
        record = await service.disputes.record_of(trade.id)
        assert record["status"] == 0  # still Settled on the ledger
        assert [row.status for row in await store.list_settlements()] == ["settled"]
