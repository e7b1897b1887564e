"""settle_trades on the real SVM: payment, records, reputations, events, and every misuse
that must leave the ledger untouched (double settlement, wrong settler, forged or
non-canonical record address, wrong mint or token program, insufficient escrow, ...)."""

from __future__ import annotations

import pytest

pytest.importorskip("solders.litesvm", reason="solders (with LiteSVM) is not installed")

import hashlib

from etp_client import TradeInput
from solders.instruction import AccountMeta
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from svm_world import TOKEN_2022_PROGRAM, World

from tests.anchor.conftest import Market


def trade(
    auction_id: int = 1,
    trade_id: int = 1,
    device_id: int = 7,
    price: int = 215_000,
    energy_wh: int = 2_500,
) -> TradeInput:
    evidence = hashlib.sha256(f"confirm {auction_id}/{trade_id}".encode()).digest()
    return TradeInput(auction_id, trade_id, device_id, price, energy_wh, evidence)


def test_settlement_pays_the_seller_and_records_the_trade(market: Market) -> None:
    world, buyer, seller = market.world, market.buyer, market.seller
    vault = world.vault(buyer.pubkey)
    before = world.token_balance(vault)
    world.warp_seconds(1_000)
    t = trade()

    outcome = world.must(world.settle([(t, buyer, seller)]))

    amount = 215_000 * 2_500 // 1_000
    assert world.token_balance(seller.token_account) == amount
    assert world.token_balance(vault) == before - amount
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert record["buyer"] == buyer.pubkey and record["seller"] == seller.pubkey
    assert (record["price_per_kwh"], record["energy_wh"], record["amount"]) == (
        215_000,
        2_500,
        amount,
    )
    assert record["evidence_hash"] == t.evidence_hash
    assert record["settled_at"] == world.now()
    assert record["dispute_deadline"] == world.now() + 3600
    assert record["status"] == 0 and record["device_id"] == 7
    for party in (buyer, seller):
        reputation = world.decoded(party.reputation)
        assert (reputation["trades"], reputation["energy_wh"], reputation["volume"]) == (
            1,
            2_500,
            amount,
        )
        assert reputation["score"] == 1
    assert world.decoded(world.escrow(buyer.pubkey))["paid"] == amount
    market_state = world.decoded(world.market)
    assert (market_state["trades_settled"], market_state["volume"]) == (1, amount)
    events = world.idl.events(outcome.logs)
    assert [name for name, _ in events] == ["TradeSettled"]
    assert events[0][1]["amount"] == amount and events[0][1]["evidence_hash"] == t.evidence_hash


def test_a_batch_settles_several_trades_in_one_transaction(market: Market) -> None:
    world, buyer, seller = market.world, market.buyer, market.seller
    other_seller = world.new_seller([9])
    batch = [
        (trade(5, 1), buyer, seller),
        (trade(5, 2, device_id=9), buyer, other_seller),
        (trade(5, 3, device_id=8, energy_wh=1_000), buyer, seller),
    ]
    outcome = world.must(world.settle(batch))
    assert len(world.idl.events(outcome.logs)) == 3
    assert world.token_balance(seller.token_account) == 537_500 + 215_000
    assert world.token_balance(other_seller.token_account) == 537_500
    assert world.decoded(world.market)["trades_settled"] == 3


def test_double_settlement_in_another_transaction_is_refused(market: Market) -> None:
    world, buyer, seller = market.world, market.buyer, market.seller
    world.must(world.settle([(trade(), buyer, seller)]))
    paid = world.token_balance(seller.token_account)

    again = world.settle([(trade(), buyer, seller)])

    assert again.error_name == "AlreadyInitialized"
    assert world.token_balance(seller.token_account) == paid


def test_double_settlement_in_the_same_transaction_is_refused_atomically(market: Market) -> None:
    world, buyer, seller = market.world, market.buyer, market.seller
    outcome = world.settle([(trade(), buyer, seller), (trade(), buyer, seller)])
    assert outcome.error_name == "AlreadyInitialized"
    assert world.token_balance(seller.token_account) == 0
    assert world.data(world.idl.trade_record_address(world.market, 1, 1)) is None


def test_same_trade_id_in_another_auction_is_a_different_trade(market: Market) -> None:
    world, buyer, seller = market.world, market.buyer, market.seller
    world.must(world.settle([(trade(1, 1), buyer, seller)]))
    world.must(world.settle([(trade(2, 1), buyer, seller)]))
    assert world.token_balance(seller.token_account) == 2 * 537_500


def test_wrong_settler_is_refused(market: Market) -> None:
    world = market.world
    impostor = world.new_keypair()
    outcome = world.settle([(trade(), market.buyer, market.seller)], signer=impostor)
    assert outcome.error_name == "Unauthorized"
    assert world.token_balance(market.seller.token_account) == 0


def test_settler_that_did_not_sign_is_refused(market: Market) -> None:
    world = market.world
    ix = world.settle_instruction([(trade(), market.buyer, market.seller)])
    metas = list(ix.accounts)
    metas[0] = AccountMeta(world.settler.pubkey(), False, True)
    ix = type(ix)(ix.program_id, ix.data, metas)
    outcome = world.send([ix], world.payer)
    assert outcome.error_name == "MissingSignature"


def test_forged_record_address_is_refused(market: Market) -> None:
    world = market.world
    forged = Keypair()
    outcome = world.send(
        [
            world.settle_instruction(
                [(trade(), market.buyer, market.seller)], record_overrides={0: forged.pubkey()}
            )
        ],
        world.settler,
        compute_unit_limit=400_000,
    )
    assert outcome.error_name == "InvalidPda"


def test_record_at_a_non_canonical_bump_is_refused(market: Market) -> None:
    world = market.world
    seeds = [b"trade", bytes(world.market), (1).to_bytes(8, "little"), (1).to_bytes(8, "little")]
    _, canonical = Pubkey.find_program_address(seeds, world.program_id)
    for bump in range(canonical - 1, -1, -1):
        try:
            other = Pubkey.create_program_address([*seeds, bytes([bump])], world.program_id)
            break
        except Exception:  # on the curve: not a valid PDA, try the next bump
            continue
    else:
        raise AssertionError("no second valid bump below the canonical one")
    outcome = world.settle([(trade(), market.buyer, market.seller)], record_overrides={0: other})
    assert outcome.error_name == "InvalidPda"


def test_record_address_someone_prefunded_still_settles(market: Market) -> None:
    """Lamports sent to a future record address must not block its settlement."""
    world = market.world
    record = world.idl.trade_record_address(world.market, 1, 1)
    world.svm.airdrop(record, 1_000)
    world.must(world.settle([(trade(), market.buyer, market.seller)]))
    assert world.decoded(record)["amount"] == 537_500


def test_wrong_mint_is_refused(market: Market) -> None:
    world = market.world
    other_mint = world.create_mint(6)
    outcome = world.settle(
        [(trade(), market.buyer, market.seller)], overrides={"payment_mint": other_mint}
    )
    assert outcome.error_name == "InvalidMint"


def test_seller_token_account_of_another_mint_is_refused(market: Market) -> None:
    world, seller = market.world, market.seller
    other_mint = world.create_mint(6)
    seller.token_account = world.create_token_account(seller.pubkey, other_mint)
    outcome = world.settle([(trade(), market.buyer, seller)])
    assert outcome.error_name == "InvalidMint"


def test_seller_token_account_of_someone_else_is_refused(market: Market) -> None:
    world, seller = market.world, market.seller
    thief = world.new_keypair()
    seller.token_account = world.create_token_account(thief.pubkey())
    outcome = world.settle([(trade(), market.buyer, seller)])
    assert outcome.error_name == "PartyMismatch"


def test_wrong_token_program_is_refused(market: Market) -> None:
    world = market.world
    outcome = world.settle(
        [(trade(), market.buyer, market.seller)], overrides={"token_program": TOKEN_2022_PROGRAM}
    )
    assert outcome.error_name == "InvalidTokenProgram"


def test_insufficient_escrow_is_refused_and_nothing_moves(market: Market) -> None:
    world, buyer = market.world, market.buyer
    vault_before = world.token_balance(world.vault(buyer.pubkey))
    big = trade(1, 2, price=1_000_000, energy_wh=20_000)  # 20 tokens; the vault holds 10
    outcome = world.settle([(trade(1, 1), buyer, market.seller), (big, buyer, market.seller)])
    assert outcome.error_name == "InsufficientEscrow"
    assert world.token_balance(world.vault(buyer.pubkey)) == vault_before
    assert world.data(world.idl.trade_record_address(world.market, 1, 1)) is None


def test_price_above_the_aggregators_cap_is_refused(market: Market) -> None:
    outcome = market.world.settle([(trade(price=1_000_001), market.buyer, market.seller)])
    assert outcome.error_name == "PriceAboveCap"


def test_device_not_registered_to_the_seller_is_refused(market: Market) -> None:
    outcome = market.world.settle([(trade(device_id=99), market.buyer, market.seller)])
    assert outcome.error_name == "UnknownDevice"


def test_zero_energy_is_refused(market: Market) -> None:
    outcome = market.world.settle([(trade(energy_wh=0), market.buyer, market.seller)])
    assert outcome.error_name == "ZeroAmount"


def test_reputation_passed_as_escrow_is_refused(market: Market) -> None:
    """Type cosplay: a Reputation account where an Escrow belongs."""
    world, buyer = market.world, market.buyer
    ix = world.settle_instruction([(trade(), buyer, market.seller)])
    metas = list(ix.accounts)
    metas[5 + 1] = AccountMeta(buyer.reputation, False, True)  # escrow slot of trade 0
    outcome = world.send([type(ix)(ix.program_id, ix.data, metas)], world.settler)
    assert outcome.error_name == "InvalidDiscriminator"


def test_escrow_lookalike_owned_by_another_program_is_refused(market: Market) -> None:
    """Owner check: the same bytes as a real Escrow, in an account this program does not own."""
    world, buyer = market.world, market.buyer
    real = world.svm.get_account(world.escrow(buyer.pubkey))
    assert real is not None
    fake = Keypair().pubkey()
    from solders.account import Account

    world.svm.set_account(
        fake, Account(real.lamports, bytes(real.data), Pubkey.default(), False, 0)
    )
    ix = world.settle_instruction([(trade(), buyer, market.seller)])
    metas = list(ix.accounts)
    metas[5 + 1] = AccountMeta(fake, False, True)
    outcome = world.send([type(ix)(ix.program_id, ix.data, metas)], world.settler)
    assert outcome.error_name == "InvalidAccountOwner"


def test_settlement_is_refused_while_the_market_is_paused(market: Market) -> None:
    world = market.world
    world.must(world.admin("pause_market", {"paused": True}))
    assert world.settle([(trade(), market.buyer, market.seller)]).error_name == "MarketPaused"
    world.must(world.admin("pause_market", {"paused": False}))
    world.must(world.settle([(trade(), market.buyer, market.seller)]))


def test_token_2022_market_settles(program_so: bytes) -> None:
    world = World(program_so, token_program=TOKEN_2022_PROGRAM)
    market = Market(world)
    world.must(world.settle([(trade(), market.buyer, market.seller)]))
    assert world.token_balance(market.seller.token_account) == 537_500


def test_nine_settlements_fit_one_v0_transaction_with_a_lookup_table(market: Market) -> None:
    """Recurring addresses from a lookup table leave 9 trades (each with its own record and
    battery owner) inside the 1,232-byte limit and the default 200,000 CU budget."""
    world, buyer = market.world, market.buyer
    sellers = [world.new_seller([1]) for _ in range(9)]
    recurring = [
        world.market,
        world.mint,
        world.token_program,
        Pubkey.default(),
        world.escrow(buyer.pubkey),
        world.vault(buyer.pubkey),
        buyer.reputation,
    ]
    for seller in sellers:
        recurring += [seller.reputation, seller.token_account]
    table = world.create_lookup_table(recurring)
    batch = [(trade(9, i, device_id=1, energy_wh=1_000), buyer, s) for i, s in enumerate(sellers)]

    outcome = world.must(world.send_v0([world.settle_instruction(batch)], world.settler, [table]))

    print(
        f"\n9 settlements in one v0 transaction: {outcome.size} bytes, {outcome.compute_units} CU"
    )
    assert outcome.size <= 1232
    assert outcome.compute_units <= 200_000
    assert all(world.token_balance(s.token_account) == 215_000 for s in sellers)
    assert len(world.idl.events(outcome.logs)) == 9


def test_unknown_instruction_and_trailing_bytes_are_refused(market: Market) -> None:
    world = market.world
    ix = world.settle_instruction([(trade(), market.buyer, market.seller)])
    unknown = type(ix)(ix.program_id, bytes(8) + bytes(ix.data)[8:], list(ix.accounts))
    assert world.send([unknown], world.settler).error_name == "UnknownInstruction"
    padded = type(ix)(ix.program_id, bytes(ix.data) + b"\0", list(ix.accounts))
    assert world.send([padded], world.settler).error_name == "InvalidInstructionData"
    assert world.token_balance(market.seller.token_account) == 0


def test_token_2022_mint_with_transfer_fee_settles_net_of_the_fee(program_so: bytes) -> None:
    """The vault is sized by the token program (GetAccountDataSize: the fee extension needs a
    larger account); the seller receives the amount minus the mint's 1 % fee, the record keeps
    the gross amount."""
    world = World(program_so, token_program=TOKEN_2022_PROGRAM, transfer_fee_bps=100)
    market = Market(world)
    vault = world.svm.get_account(world.vault(market.buyer.pubkey))
    assert vault is not None and len(vault.data) == 178
    assert world.token_balance(world.vault(market.buyer.pubkey)) == 10_000_000 - 100_000
    world.must(world.settle([(trade(), market.buyer, market.seller)]))
    assert world.token_balance(market.seller.token_account) == 537_500 - 5_375
    record = world.decoded(world.idl.trade_record_address(world.market, 1, 1))
    assert record["amount"] == 537_500


def test_escrow_and_vault_of_different_aggregators_are_refused(market: Market) -> None:
    """PDA sharing / data matching: a trade's escrow, vault and buyer must belong together."""
    world, buyer, seller = market.world, market.buyer, market.seller
    other = world.new_buyer(10_000_000, max_price_per_kwh=1_000_000)
    ix = world.settle_instruction([(trade(), buyer, seller)])
    for slot, key, expected in (
        (6, world.escrow(other.pubkey), "PartyMismatch"),  # other's escrow, buyer's reputation
        (7, world.vault(other.pubkey), "InvalidTokenAccount"),  # buyer's escrow, other's vault
    ):
        metas = list(ix.accounts)
        metas[slot] = AccountMeta(key, False, True)
        outcome = world.send([type(ix)(ix.program_id, ix.data, metas)], world.settler)
        assert outcome.error_name == expected
    assert world.token_balance(world.vault(other.pubkey)) == 10_000_000
