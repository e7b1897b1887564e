"""Disputes on the real SVM: only the trade's parties, only within the window, only once;
resolution by the market authority only, with refund and reputation penalty."""

from __future__ import annotations

import pytest

pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")

from svm_world import World

from tests.anchor.conftest import Market
from tests.anchor.test_settlement import trade

AMOUNT = 537_500


def settled(market: Market) -> World:
    world = market.world
    world.must(world.settle([(trade(), market.buyer, market.seller)]))
    return world


def test_buyer_opens_a_dispute_within_the_window(market: Market) -> None:
    world = settled(market)
    world.warp_seconds(3_000)
    outcome = world.must(world.open_dispute(market.buyer.keypair, 1, 1))
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert (record["status"], record["disputed_by"]) == (1, 1)
    assert world.decoded(market.buyer.reputation)["disputes_opened"] == 1
    assert [name for name, _ in world.idl.events(outcome.logs)] == ["DisputeOpened"]


def test_seller_may_dispute_too(market: Market) -> None:
    world = settled(market)
    world.must(world.open_dispute(market.seller.keypair, 1, 1))
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert record["disputed_by"] == 2


def test_dispute_by_a_stranger_is_refused(market: Market) -> None:
    world = settled(market)
    stranger = world.new_keypair()
    world.must(world.register(stranger, 1, []))
    assert world.open_dispute(stranger, 1, 1).error_name == "NotAParty"


def test_dispute_after_the_window_is_refused(market: Market) -> None:
    world = settled(market)
    world.warp_seconds(3_601)
    assert world.open_dispute(market.buyer.keypair, 1, 1).error_name == "DisputeWindowClosed"


def test_second_dispute_is_refused(market: Market) -> None:
    world = settled(market)
    world.must(world.open_dispute(market.buyer.keypair, 1, 1))
    assert world.open_dispute(market.seller.keypair, 1, 1).error_name == "DisputeNotAllowed"


def test_resolution_by_a_non_authority_is_refused(market: Market) -> None:
    world = settled(market)
    world.must(world.open_dispute(market.buyer.keypair, 1, 1))
    source = world.create_token_account(world.settler.pubkey())
    outcome = world.resolve_dispute(world.settler, 1, 1, market.buyer, market.seller, 0, source)
    assert outcome.error_name == "Unauthorized"


def test_resolution_without_an_open_dispute_is_refused(market: Market) -> None:
    world = settled(market)
    source = world.create_token_account(world.authority.pubkey())
    outcome = world.resolve_dispute(world.authority, 1, 1, market.buyer, market.seller, 0, source)
    assert outcome.error_name == "NoOpenDispute"


def test_refund_resolution_pays_the_buyer_back_and_penalises_the_seller(market: Market) -> None:
    world = settled(market)
    buyer, seller = market.buyer, market.seller
    world.must(world.open_dispute(buyer.keypair, 1, 1))
    source = world.create_token_account(world.authority.pubkey())
    world.mint_to(source, AMOUNT)
    vault_before = world.token_balance(world.vault(buyer.pubkey))

    assert (
        world.resolve_dispute(world.authority, 1, 1, buyer, seller, AMOUNT + 1, source).error_name
        == "RefundTooLarge"
    )
    outcome = world.must(
        world.resolve_dispute(world.authority, 1, 1, buyer, seller, AMOUNT, source)
    )

    assert world.token_balance(world.vault(buyer.pubkey)) == vault_before + AMOUNT
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert (record["status"], record["refunded"]) == (2, AMOUNT)
    seller_rep = world.decoded(seller.reputation)
    assert (seller_rep["disputes_lost"], seller_rep["score"]) == (1, 1 - 10)
    assert world.decoded(world.escrow(buyer.pubkey))["refunded"] == AMOUNT
    assert [name for name, _ in world.idl.events(outcome.logs)] == ["DisputeResolved"]
    # resolved is final
    assert world.open_dispute(buyer.keypair, 1, 1).error_name == "DisputeNotAllowed"


def test_unfounded_dispute_penalises_whoever_opened_it(market: Market) -> None:
    world = settled(market)
    buyer, seller = market.buyer, market.seller
    world.must(world.open_dispute(buyer.keypair, 1, 1))
    source = world.create_token_account(world.authority.pubkey())
    world.must(world.resolve_dispute(world.authority, 1, 1, buyer, seller, 0, source))
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert record["status"] == 3
    assert world.decoded(buyer.reputation)["disputes_lost"] == 1
    assert world.decoded(seller.reputation)["disputes_lost"] == 0


def test_resolution_with_swapped_party_accounts_is_refused(market: Market) -> None:
    world = settled(market)
    buyer, seller = market.buyer, market.seller
    world.must(world.open_dispute(buyer.keypair, 1, 1))
    source = world.create_token_account(world.authority.pubkey())
    outcome = world.resolve_dispute(world.authority, 1, 1, seller, buyer, 0, source)
    assert outcome.error_name == "PartyMismatch"
