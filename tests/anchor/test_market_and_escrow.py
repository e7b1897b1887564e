"""Market administration, registration and aggregator escrow on the real SVM: who may do
what, re-initialisation, and that escrow funds leave only to their owner or a settled trade."""

from __future__ import annotations

import pytest

pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")

from solders.keypair import Keypair
from svm_world import World

from tests.anchor.conftest import Market


def test_market_is_created_at_its_pda_with_the_given_terms(world: World) -> None:
    world.must(world.initialize_market(dispute_window_seconds=7200))
    state = world.decoded(world.market)
    assert state["authority"] == world.authority.pubkey()
    assert state["settler"] == world.settler.pubkey()
    assert state["payment_mint"] == world.mint and state["token_program"] == world.token_program
    assert state["dispute_window_seconds"] == 7200 and state["mint_decimals"] == 6
    assert not state["paused"]


def test_market_cannot_be_initialised_twice(world: World) -> None:
    world.must(world.initialize_market())
    assert world.initialize_market(dispute_window_seconds=1).error_name == "AlreadyInitialized"
    assert world.decoded(world.market)["dispute_window_seconds"] == 3600


def test_dispute_window_must_be_sane(world: World) -> None:
    assert world.initialize_market(dispute_window_seconds=0).error_name == "InvalidDisputeWindow"
    too_long = 31 * 24 * 3600
    assert (
        world.initialize_market(dispute_window_seconds=too_long).error_name
        == "InvalidDisputeWindow"
    )


def test_market_refuses_a_mint_of_another_token_program(world: World) -> None:
    from svm_world import TOKEN_2022_PROGRAM

    ix = world.idl.instruction(
        "initialize_market",
        {
            "authority": world.authority.pubkey(),
            "market": world.market,
            "payment_mint": world.mint,
            "token_program": TOKEN_2022_PROGRAM,
        },
        {"settler": world.settler.pubkey(), "dispute_window_seconds": 60},
    )
    assert world.send([ix], world.authority).error_name == "InvalidMint"


def test_participants_register_once_with_valid_devices(world: World) -> None:
    world.must(world.initialize_market())
    owner = world.new_keypair()
    assert world.register(owner, 0, []).error_name == "InvalidDevices"
    assert world.register(owner, 0, list(range(1, 10))).error_name == "InvalidDevices"
    assert world.register(owner, 0, [3, 3]).error_name == "InvalidDevices"
    assert world.register(owner, 1, [3]).error_name == "InvalidDevices"
    assert world.register(owner, 2, []).error_name == "InvalidRole"
    world.must(world.register(owner, 0, [3, 4]))
    state = world.decoded(world.idl.reputation_address(world.market, owner.pubkey()))
    assert (
        state["role"] == 0 and state["device_ids"][:3] == [3, 4, 0] and state["device_count"] == 2
    )
    assert world.register(owner, 0, [5]).error_name == "AlreadyInitialized"


def test_only_aggregators_open_escrow(world: World) -> None:
    world.must(world.initialize_market())
    seller = world.new_seller([1])
    assert world.open_escrow(seller.keypair, 100).error_name == "InvalidRole"


def test_fund_and_withdraw_move_only_the_aggregators_money(market: Market) -> None:
    world, buyer = market.world, market.buyer
    vault = world.vault(buyer.pubkey)
    assert world.token_balance(vault) == 10_000_000
    world.must(world.withdraw(buyer, 4_000_000))
    assert world.token_balance(vault) == 6_000_000
    assert world.token_balance(buyer.token_account) == 4_000_000
    escrow = world.decoded(world.escrow(buyer.pubkey))
    assert (escrow["deposited"], escrow["withdrawn"]) == (10_000_000, 4_000_000)


def test_withdraw_more_than_the_vault_holds_is_refused(market: Market) -> None:
    world, buyer = market.world, market.buyer
    assert world.withdraw(buyer, 10_000_001).error_name == "InsufficientEscrow"


def test_withdraw_by_someone_else_is_refused(market: Market) -> None:
    world, buyer = market.world, market.buyer
    thief = world.new_keypair()
    thief_account = world.create_token_account(thief.pubkey())
    outcome = world.withdraw(buyer, 1, signer=thief, destination=thief_account)
    assert outcome.error_name == "Unauthorized"
    assert world.token_balance(world.vault(buyer.pubkey)) == 10_000_000


def test_withdraw_into_the_vault_itself_is_refused(market: Market) -> None:
    """Duplicate mutable accounts: the same vault as source and destination."""
    world, buyer = market.world, market.buyer
    outcome = world.withdraw(buyer, 1, destination=world.vault(buyer.pubkey))
    assert outcome.error_name == "DuplicateAccount"


def test_settler_cannot_withdraw_escrow(market: Market) -> None:
    world, buyer = market.world, market.buyer
    settler_account = world.create_token_account(world.settler.pubkey())
    outcome = world.withdraw(buyer, 1, signer=world.settler, destination=settler_account)
    assert outcome.error_name == "Unauthorized"


def test_withdraw_stays_open_while_paused_but_funding_does_not(market: Market) -> None:
    world, buyer = market.world, market.buyer
    world.must(world.admin("pause_market", {"paused": True}))
    world.must(world.withdraw(buyer, 1_000))
    world.mint_to(buyer.token_account, 5)
    assert world.fund(buyer, 5).error_name == "MarketPaused"


def test_rotate_settler_is_authority_only_and_takes_effect(market: Market) -> None:
    world = market.world
    stranger = world.new_keypair()
    new_settler = world.new_keypair()
    outcome = world.admin("rotate_settler", {"new_settler": stranger.pubkey()}, signer=stranger)
    assert outcome.error_name == "Unauthorized"
    world.must(world.admin("rotate_settler", {"new_settler": new_settler.pubkey()}))
    from tests.anchor.test_settlement import trade

    old = world.settle([(trade(), market.buyer, market.seller)])
    assert old.error_name == "Unauthorized"
    world.must(world.settle([(trade(), market.buyer, market.seller)], signer=new_settler))


def test_pause_is_authority_only(market: Market) -> None:
    world = market.world
    outcome = world.admin("pause_market", {"paused": True}, signer=world.settler)
    assert outcome.error_name == "Unauthorized"
    assert not world.decoded(world.market)["paused"]


def test_market_of_another_authority_is_not_this_one(market: Market) -> None:
    """The market PDA is bound to its authority: a second authority gets its own market."""
    world = market.world
    other = Keypair()
    assert world.idl.market_address(other.pubkey()) != world.market


def test_reserved_funds_cannot_be_withdrawn_until_settled_or_lapsed(market: Market) -> None:
    from tests.anchor.test_settlement import trade

    world, buyer = market.world, market.buyer
    world.must(world.reserve(buyer, 6_000_000))
    assert world.withdraw(buyer, 4_000_001).error_name == "FundsReserved"
    world.must(world.withdraw(buyer, 4_000_000))
    # settlement consumes the reservation
    world.must(world.settle([(trade(), buyer, market.seller)]))
    escrow = world.decoded(world.escrow(buyer.pubkey))
    assert escrow["reserved"] == 6_000_000 - 537_500
    assert world.withdraw(buyer, 1).error_name == "FundsReserved"
    # a reservation the hub never settles lapses: funds are not locked forever
    world.warp_seconds(3_600)
    world.must(world.withdraw(buyer, 6_000_000 - 537_500))


def test_release_gives_reserved_funds_back(market: Market) -> None:
    world, buyer = market.world, market.buyer
    world.must(world.reserve(buyer, 10_000_000))
    world.must(world.release(buyer, 3_000_000))
    world.must(world.withdraw(buyer, 3_000_000))
    assert world.withdraw(buyer, 1).error_name == "FundsReserved"


def test_reservation_is_settler_only_and_bounded_by_the_vault(market: Market) -> None:
    world, buyer = market.world, market.buyer
    assert world.reserve(buyer, 1, signer=buyer.keypair).error_name == "Unauthorized"
    assert world.release(buyer, 1, signer=world.authority).error_name == "Unauthorized"
    assert world.reserve(buyer, 10_000_001).error_name == "InsufficientEscrow"
    world.must(world.reserve(buyer, 10_000_000))
    assert world.reserve(buyer, 1).error_name == "InsufficientEscrow"


def test_escrow_cannot_be_opened_twice(market: Market) -> None:
    world, buyer = market.world, market.buyer
    assert world.open_escrow(buyer.keypair, 5).error_name == "AlreadyInitialized"
    assert world.decoded(world.escrow(buyer.pubkey))["max_price_per_kwh"] == 1_000_000


def test_accounts_of_another_market_are_refused(market: Market) -> None:
    """Account data matching across markets: a battery owner registered in a second market
    (another authority, same program) cannot be paid through the first one."""
    from solders.instruction import AccountMeta

    from tests.anchor.test_settlement import trade

    world = market.world
    other_authority = world.new_keypair()
    other_market = world.idl.market_address(other_authority.pubkey())
    ix = world.idl.instruction(
        "initialize_market",
        {
            "authority": other_authority.pubkey(),
            "market": other_market,
            "payment_mint": world.mint,
            "token_program": world.token_program,
        },
        {"settler": world.settler.pubkey(), "dispute_window_seconds": 60},
    )
    world.must(world.send([ix], other_authority))
    owner = world.new_keypair()
    elsewhere = world.idl.reputation_address(other_market, owner.pubkey())
    ix = world.idl.instruction(
        "register_participant",
        {"owner": owner.pubkey(), "market": other_market, "reputation": elsewhere},
        {"role": 0, "device_ids": [7]},
    )
    world.must(world.send([ix], owner))

    settle = world.settle_instruction([(trade(), market.buyer, market.seller)])
    metas = list(settle.accounts)
    metas[5 + 4] = AccountMeta(elsewhere, False, True)  # seller_reputation of trade 0
    outcome = world.send([type(settle)(settle.program_id, settle.data, metas)], world.settler)
    assert outcome.error_name == "MarketMismatch"
