"""A LiteSVM ledger with the etp_settlement program deployed, and the participants tests and
the benchmark need: a payment mint, a market, aggregators with funded escrow, batteries.

LiteSVM runs the real SVM in-process with the mainnet feature set; the program goes in
through the BPF Upgradeable Loader (hub/settlement/deploy.py), as it would on a cluster.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etp_client import Idl, TradeInput, load_idl
from solders.account import Account
from solders.address_lookup_table_account import (
    ID as ADDRESS_LOOKUP_TABLE_ID,
)
from solders.address_lookup_table_account import (
    AddressLookupTable,
    AddressLookupTableAccount,
)
from solders.compute_budget import set_compute_unit_limit, set_compute_unit_price
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.message import Message, MessageV0
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, create_account
from solders.transaction import Transaction, VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata

from hub.settlement.deploy import deploy_upgradeable

__all__ = ["TOKEN_2022_PROGRAM", "TOKEN_PROGRAM", "Outcome", "Party", "World"]

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
TOKEN_2022_PROGRAM = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
MINT_SIZE = 82
TOKEN_ACCOUNT_SIZE = 165
TRANSFER_FEE_MINT_SIZE = 165 + 1 + 4 + 108  # padded base mint, type, TLV, TransferFeeConfig
TRANSFER_FEE_ACCOUNT_SIZE = 165 + 1 + 4 + 8  # base account, type, TLV, TransferFeeAmount
TX_SIZE_LIMIT = 1232


@dataclass
class Outcome:
    """What a transaction did: success, custom error code, logs, compute units, size."""

    ok: bool
    logs: list[str]
    compute_units: int
    error: str | None = None
    code: int | None = None
    size: int = 0
    error_name: str | None = None


@dataclass
class Party:
    """A participant: its key, its token account, its Reputation PDA."""

    keypair: Keypair
    token_account: Pubkey
    reputation: Pubkey
    devices: list[int] = field(default_factory=list)

    @property
    def pubkey(self) -> Pubkey:
        return self.keypair.pubkey()


def _with_budget(
    instructions: list[Instruction], limit: int | None, price: int | None
) -> list[Instruction]:
    budget = []
    if limit is not None:
        budget.append(set_compute_unit_limit(limit))
    if price is not None:
        budget.append(set_compute_unit_price(price))
    return [*budget, *instructions]


def program_keypair() -> Keypair:
    """The committed program keypair (its address is the IDL's)."""
    path = Path(__file__).resolve().parents[1] / "keys" / "etp_settlement-keypair.json"
    return Keypair.from_bytes(bytes(json.loads(path.read_text())))


class World:
    """One ledger, one deployed program, one market (after `initialize_market`).

    With a `seed`, every key is derived from it and the program is deployed at the IDL's
    address: the same run then gives the same addresses, PDA bumps and compute units.
    """

    def __init__(
        self,
        program_so: bytes,
        token_program: Pubkey = TOKEN_PROGRAM,
        decimals: int = 6,
        seed: int | None = None,
        transfer_fee_bps: int | None = None,
    ) -> None:
        self.seed = seed
        # Token-2022 only: mints with the TransferFeeConfig extension (accounts then carry
        # the TransferFeeAmount extension: 165 + 1 type byte + 4 TLV header + 8 = 178 bytes)
        self.transfer_fee_bps = transfer_fee_bps
        self.mint_size = MINT_SIZE if transfer_fee_bps is None else TRANSFER_FEE_MINT_SIZE
        self.account_size = (
            TOKEN_ACCOUNT_SIZE if transfer_fee_bps is None else TRANSFER_FEE_ACCOUNT_SIZE
        )
        self._keys_made = 0
        self.svm = LiteSVM().with_mainnet_features()
        self.payer = self.fresh_keypair()
        self.svm.airdrop(self.payer.pubkey(), 1_000 * 10**9)
        self.program_keypair = self.fresh_keypair() if seed is None else program_keypair()
        self.program_id = deploy_upgradeable(self.svm, self.payer, self.program_keypair, program_so)
        self.idl: Idl = load_idl(self.program_id)
        self.token_program = token_program
        self.decimals = decimals
        self.mint_authority = self.fresh_keypair()
        self.mint = self.create_mint(decimals)
        self.authority = self.new_keypair()
        self.settler = self.new_keypair()
        self.market = self.idl.market_address(self.authority.pubkey())

    # --- plumbing
    def fresh_keypair(self) -> Keypair:
        """A new keypair: random, or the next one derived from the seed."""
        if self.seed is None:
            return Keypair()
        self._keys_made += 1
        material = hashlib.sha256(f"etp-world {self.seed} {self._keys_made}".encode()).digest()
        return Keypair.from_seed(material)

    def new_keypair(self, lamports: int = 10 * 10**9) -> Keypair:
        keypair = self.fresh_keypair()
        self.svm.airdrop(keypair.pubkey(), lamports)
        return keypair

    def send(
        self,
        instructions: list[Instruction],
        *signers: Keypair,
        payer: Keypair | None = None,
        compute_unit_limit: int | None = None,
        compute_unit_price: int | None = None,
    ) -> Outcome:
        """Sign, send, and report; a fresh blockhash each time so retries are new transactions.
        A limit and/or price (micro-lamports per CU) prepend ComputeBudget instructions."""
        payer = payer or (signers[0] if signers else self.payer)
        instructions = _with_budget(instructions, compute_unit_limit, compute_unit_price)
        unique: dict[Pubkey, Keypair] = {payer.pubkey(): payer}
        for signer in signers:
            unique.setdefault(signer.pubkey(), signer)
        self.svm.expire_blockhash()
        blockhash = self.svm.latest_blockhash()
        message = Message.new_with_blockhash(instructions, payer.pubkey(), blockhash)
        tx = Transaction(list(unique.values()), message, blockhash)
        return self._outcome(self.svm.send_transaction(tx), len(bytes(tx)))

    def _outcome(self, result: Any, size: int) -> Outcome:
        if isinstance(result, FailedTransactionMetadata):
            text = str(result.err())
            match = re.search(r"Custom\((\d+)\)", text)
            code = int(match.group(1)) if match else None
            meta = result.meta()
            return Outcome(
                False,
                list(meta.logs()),
                meta.compute_units_consumed(),
                text,
                code,
                size,
                self.idl.errors.get(code) if code is not None else None,
            )
        return Outcome(True, list(result.logs()), result.compute_units_consumed(), size=size)

    def create_lookup_table(self, addresses: list[Pubkey]) -> AddressLookupTableAccount:
        """An address lookup table holding `addresses`, active from the next slot.

        Written directly as the Address Lookup Table program's account state (enum tag 1,
        LookupTableMeta, then the addresses) instead of through its create/extend
        instructions, which need a recent slot from the SlotHashes sysvar.
        """
        key = self.fresh_keypair().pubkey()
        slot = self.svm.get_clock().slot
        meta = struct.pack("<IQQB", 1, 2**64 - 1, slot, 0) + b"\x01" + bytes(self.payer.pubkey())
        data = meta + b"\0\0" + b"".join(bytes(a) for a in addresses)
        table = AddressLookupTable.deserialize(data)  # the runtime's own parser agrees
        assert list(table.addresses) == addresses
        self.svm.set_account(
            key,
            Account(
                lamports=self.svm.minimum_balance_for_rent_exemption(len(data)),
                data=data,
                owner=ADDRESS_LOOKUP_TABLE_ID,
                executable=False,
                rent_epoch=0,
            ),
        )
        clock = self.svm.get_clock()
        clock.slot = slot + 1
        self.svm.set_clock(clock)
        return AddressLookupTableAccount(key, addresses)

    def send_v0(
        self,
        instructions: list[Instruction],
        signer: Keypair,
        tables: list[AddressLookupTableAccount],
        compute_unit_limit: int | None = None,
        compute_unit_price: int | None = None,
    ) -> Outcome:
        """A versioned (v0) transaction resolving accounts through lookup tables."""
        instructions = _with_budget(instructions, compute_unit_limit, compute_unit_price)
        self.svm.expire_blockhash()
        message = MessageV0.try_compile(
            signer.pubkey(), instructions, tables, self.svm.latest_blockhash()
        )
        tx = VersionedTransaction(message, [signer])
        return self._outcome(self.svm.send_transaction(tx), len(bytes(tx)))

    def must(self, outcome: Outcome) -> Outcome:
        if not outcome.ok:
            raise AssertionError(
                f"transaction failed: {outcome.error_name or outcome.error}\n"
                + "\n".join(outcome.logs)
            )
        return outcome

    def data(self, address: Pubkey) -> bytes | None:
        account = self.svm.get_account(address)
        return None if account is None else bytes(account.data)

    def data_of(self, address: Pubkey) -> bytes:
        """Data of an account that must exist."""
        data = self.data(address)
        assert data is not None, f"{address} does not exist"
        return data

    def decoded(self, address: Pubkey) -> dict[str, Any]:
        data = self.data(address)
        assert data is not None, f"{address} does not exist"
        return self.idl.decode_account(data)[1]

    def token_balance(self, address: Pubkey) -> int:
        data = self.data(address)
        assert data is not None
        return struct.unpack_from("<Q", data, 64)[0]

    def now(self) -> int:
        return self.svm.get_clock().unix_timestamp

    def warp_seconds(self, seconds: int) -> None:
        clock = self.svm.get_clock()
        clock.unix_timestamp = clock.unix_timestamp + seconds
        clock.slot = clock.slot + 1
        self.svm.set_clock(clock)

    # --- SPL Token (either program; same instruction layouts)
    def create_mint(self, decimals: int) -> Pubkey:
        mint = self.fresh_keypair()
        create = create_account(
            CreateAccountParams(
                from_pubkey=self.payer.pubkey(),
                to_pubkey=mint.pubkey(),
                lamports=self.svm.minimum_balance_for_rent_exemption(self.mint_size),
                space=self.mint_size,
                owner=self.token_program,
            )
        )
        init = Instruction(  # InitializeMint2
            self.token_program,
            bytes([20, decimals]) + bytes(self.mint_authority.pubkey()) + b"\0",
            [AccountMeta(mint.pubkey(), False, True)],
        )
        extensions = []
        if self.transfer_fee_bps is not None:
            authority = bytes(self.mint_authority.pubkey())
            extensions.append(
                Instruction(  # TransferFeeExtension / InitializeTransferFeeConfig
                    self.token_program,
                    bytes([26, 0, 1])
                    + authority
                    + b"\x01"
                    + authority
                    + struct.pack("<HQ", self.transfer_fee_bps, 2**64 - 1),
                    [AccountMeta(mint.pubkey(), False, True)],
                )
            )
        self.must(self.send([create, *extensions, init], self.payer, mint))
        return mint.pubkey()

    def create_token_account(self, owner: Pubkey, mint: Pubkey | None = None) -> Pubkey:
        account = self.fresh_keypair()
        create = create_account(
            CreateAccountParams(
                from_pubkey=self.payer.pubkey(),
                to_pubkey=account.pubkey(),
                lamports=self.svm.minimum_balance_for_rent_exemption(self.account_size),
                space=self.account_size,
                owner=self.token_program,
            )
        )
        init = Instruction(  # InitializeAccount3
            self.token_program,
            bytes([18]) + bytes(owner),
            [
                AccountMeta(account.pubkey(), False, True),
                AccountMeta(mint or self.mint, False, False),
            ],
        )
        self.must(self.send([create, init], self.payer, account))
        return account.pubkey()

    def mint_to(self, account: Pubkey, amount: int, mint: Pubkey | None = None) -> None:
        ix = Instruction(
            self.token_program,
            bytes([7]) + struct.pack("<Q", amount),
            [
                AccountMeta(mint or self.mint, False, True),
                AccountMeta(account, False, True),
                AccountMeta(self.mint_authority.pubkey(), True, False),
            ],
        )
        self.must(self.send([ix], self.payer, self.mint_authority))

    # --- the program
    def initialize_market(self, dispute_window_seconds: int = 3600) -> Outcome:
        ix = self.idl.instruction(
            "initialize_market",
            {
                "authority": self.authority.pubkey(),
                "market": self.market,
                "payment_mint": self.mint,
                "token_program": self.token_program,
            },
            {"settler": self.settler.pubkey(), "dispute_window_seconds": dispute_window_seconds},
        )
        return self.send([ix], self.authority)

    def register(self, keypair: Keypair, role: int, devices: list[int]) -> Outcome:
        ix = self.idl.instruction(
            "register_participant",
            {
                "owner": keypair.pubkey(),
                "market": self.market,
                "reputation": self.idl.reputation_address(self.market, keypair.pubkey()),
            },
            {"role": role, "device_ids": devices},
        )
        return self.send([ix], keypair)

    def new_seller(self, devices: list[int]) -> Party:
        keypair = self.new_keypair()
        self.must(self.register(keypair, 0, devices))
        return Party(
            keypair,
            self.create_token_account(keypair.pubkey()),
            self.idl.reputation_address(self.market, keypair.pubkey()),
            devices,
        )

    def escrow(self, aggregator: Pubkey) -> Pubkey:
        return self.idl.escrow_address(self.market, aggregator)

    def vault(self, aggregator: Pubkey) -> Pubkey:
        return self.idl.vault_address(self.market, aggregator)

    def open_escrow(self, keypair: Keypair, max_price_per_kwh: int) -> Outcome:
        ix = self.idl.instruction(
            "open_escrow",
            {
                "aggregator": keypair.pubkey(),
                "market": self.market,
                "reputation": self.idl.reputation_address(self.market, keypair.pubkey()),
                "escrow": self.escrow(keypair.pubkey()),
                "vault": self.vault(keypair.pubkey()),
                "payment_mint": self.mint,
                "token_program": self.token_program,
            },
            {"max_price_per_kwh": max_price_per_kwh},
        )
        return self.send([ix], keypair)

    def fund(self, buyer: Party, amount: int) -> Outcome:
        ix = self.idl.instruction(
            "fund",
            {
                "aggregator": buyer.pubkey,
                "market": self.market,
                "escrow": self.escrow(buyer.pubkey),
                "vault": self.vault(buyer.pubkey),
                "source": buyer.token_account,
                "payment_mint": self.mint,
                "token_program": self.token_program,
            },
            {"amount": amount},
        )
        return self.send([ix], buyer.keypair)

    def withdraw(
        self,
        buyer: Party,
        amount: int,
        signer: Keypair | None = None,
        destination: Pubkey | None = None,
    ) -> Outcome:
        signer = signer or buyer.keypair
        ix = self.idl.instruction(
            "withdraw",
            {
                "aggregator": signer.pubkey(),
                "market": self.market,
                "escrow": self.escrow(buyer.pubkey),
                "vault": self.vault(buyer.pubkey),
                "destination": destination or buyer.token_account,
                "payment_mint": self.mint,
                "token_program": self.token_program,
            },
            {"amount": amount},
        )
        return self.send([ix], signer)

    def reserve(self, buyer: Party, amount: int, signer: Keypair | None = None) -> Outcome:
        signer = signer or self.settler
        accounts = {
            "settler": signer.pubkey(),
            "market": self.market,
            "escrow": self.escrow(buyer.pubkey),
            "vault": self.vault(buyer.pubkey),
        }
        ix = self.idl.instruction("reserve_funds", accounts, {"amount": amount})
        return self.send([ix], signer)

    def release(self, buyer: Party, amount: int, signer: Keypair | None = None) -> Outcome:
        signer = signer or self.settler
        accounts = {
            "settler": signer.pubkey(),
            "market": self.market,
            "escrow": self.escrow(buyer.pubkey),
        }
        ix = self.idl.instruction("release_funds", accounts, {"amount": amount})
        return self.send([ix], signer)

    def new_buyer(self, deposit: int, max_price_per_kwh: int = 10**9) -> Party:
        keypair = self.new_keypair()
        self.must(self.register(keypair, 1, []))
        party = Party(
            keypair,
            self.create_token_account(keypair.pubkey()),
            self.idl.reputation_address(self.market, keypair.pubkey()),
        )
        self.must(self.open_escrow(keypair, max_price_per_kwh))
        if deposit:
            self.mint_to(party.token_account, deposit)
            self.must(self.fund(party, deposit))
        return party

    def settle_instruction(
        self,
        trades: list[tuple[TradeInput, Party, Party]],
        settler: Pubkey | None = None,
        overrides: dict[str, Pubkey] | None = None,
        record_overrides: dict[int, Pubkey] | None = None,
    ) -> Instruction:
        """settle_trades for (trade, buyer, seller) triples; overrides swap fixed accounts."""
        remaining: list[AccountMeta] = []
        for index, (trade, buyer, seller) in enumerate(trades):
            record = (record_overrides or {}).get(index) or self.idl.trade_record_address(
                self.market, trade.auction_id, trade.trade_id
            )
            for key in (
                record,
                self.escrow(buyer.pubkey),
                self.vault(buyer.pubkey),
                buyer.reputation,
                seller.reputation,
                seller.token_account,
            ):
                remaining.append(AccountMeta(key, False, True))
        accounts = {
            "settler": settler or self.settler.pubkey(),
            "market": self.market,
            "payment_mint": self.mint,
            "token_program": self.token_program,
        }
        accounts.update(overrides or {})
        return self.idl.instruction(
            "settle_trades", accounts, {"trades": [t.as_args() for t, _, _ in trades]}, remaining
        )

    def settle(
        self,
        trades: list[tuple[TradeInput, Party, Party]],
        signer: Keypair | None = None,
        compute_unit_limit: int | None = None,
        compute_unit_price: int | None = None,
        **kwargs: Any,
    ) -> Outcome:
        signer = signer or self.settler
        ix = self.settle_instruction(trades, settler=signer.pubkey(), **kwargs)
        return self.send(
            [ix],
            signer,
            compute_unit_limit=compute_unit_limit,
            compute_unit_price=compute_unit_price,
        )

    def open_dispute(self, disputer: Keypair, auction_id: int, trade_id: int) -> Outcome:
        ix = self.idl.instruction(
            "open_dispute",
            {
                "disputer": disputer.pubkey(),
                "market": self.market,
                "trade_record": self.idl.trade_record_address(self.market, auction_id, trade_id),
                "disputer_reputation": self.idl.reputation_address(self.market, disputer.pubkey()),
            },
        )
        return self.send([ix], disputer)

    def resolve_dispute(
        self,
        signer: Keypair,
        auction_id: int,
        trade_id: int,
        buyer: Party,
        seller: Party,
        refund_amount: int,
        source: Pubkey,
    ) -> Outcome:
        ix = self.idl.instruction(
            "resolve_dispute",
            {
                "authority": signer.pubkey(),
                "market": self.market,
                "trade_record": self.idl.trade_record_address(self.market, auction_id, trade_id),
                "buyer_reputation": buyer.reputation,
                "seller_reputation": seller.reputation,
                "buyer_escrow": self.escrow(buyer.pubkey),
                "buyer_vault": self.vault(buyer.pubkey),
                "authority_token_account": source,
                "payment_mint": self.mint,
                "token_program": self.token_program,
            },
            {"refund_amount": refund_amount},
        )
        return self.send([ix], signer)

    def admin(self, name: str, args: dict[str, Any], signer: Keypair | None = None) -> Outcome:
        signer = signer or self.authority
        ix = self.idl.instruction(name, {"authority": signer.pubkey(), "market": self.market}, args)
        return self.send([ix], signer)
