"""The site on the ledger: the hub's keys (0600 files), the market, the payment mint, and a
wallet per aggregator (registered, escrow opened and funded) and per battery owner
(registered with its device). Every step checks the ledger first, so set-up is idempotent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer
from solders.transaction import VersionedTransaction

from hub.settlement.cluster import Cluster
from hub.settlement.program import Idl

__all__ = [
    "TOKEN_DECIMALS",
    "TOKEN_PROGRAM",
    "KeyFileError",
    "Party",
    "Site",
    "SiteSetupError",
    "load_or_create_keypair",
]

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
# One base unit of the payment token is one milli-cent: the hub's prices (mc per kWh) are the
# program's price_per_kwh as they are, and amount = price x Wh / 1000 is in milli-cents.
TOKEN_DECIMALS = 5
_MINT_SIZE = 82
ROLE_BATTERY_OWNER = 0
ROLE_AGGREGATOR = 1
_PARTY_LAMPORTS = 1 * 10**9  # rent of a party's accounts and its fees (embedded: airdropped)
_AGGREGATOR_TOKENS = 10**15  # "plenty": 10 billion dollars in milli-cents per aggregator
_MAX_PRICE_PER_KWH = 10**9  # aggregators' cap on chain; the market enforces its own limits


class KeyFileError(RuntimeError):
    """A key file exists but does not hold a keypair."""


class SiteSetupError(RuntimeError):
    """A set-up transaction was refused by the ledger (`err`: its error, None if it did not
    land in time)."""

    def __init__(self, message: str, err: object | None = None) -> None:
        super().__init__(message)
        self.err = err


def load_or_create_keypair(path: Path) -> Keypair:
    """The keypair in `path` (a JSON array of 64 bytes, as the Solana CLI writes it); a new one
    is created with mode 0600 if the file does not exist. The key is never logged."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        keypair = Keypair()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(list(bytes(keypair))) + "\n")
        return keypair
    try:
        return Keypair.from_bytes(bytes(json.loads(path.read_text())))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{path} must hold a keypair as a JSON array of 64 bytes; fix or delete it"
        ) from exc


@dataclass(frozen=True)
class Party:
    """A market participant: its key, token account and Reputation PDA (and, for an
    aggregator, escrow and vault PDAs)."""

    keypair: Keypair
    token_account: Pubkey
    reputation: Pubkey
    escrow: Pubkey | None = None
    vault: Pubkey | None = None

    @property
    def pubkey(self) -> Pubkey:
        return self.keypair.pubkey()


def associated_token_address(owner: Pubkey, mint: Pubkey) -> Pubkey:
    """The owner's associated token account for `mint` (SPL Token)."""
    return Pubkey.find_program_address(
        [bytes(owner), bytes(TOKEN_PROGRAM), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM
    )[0]


class Site:
    """One market on one ledger, and the parties the hub acts for.

    The settler and the market authority are keys in files (0600). Participants' keys are
    derived from the authority's secret and their hub id (aggregator id, device id): the hub
    holds them in the demo, where it plays the aggregators and battery owners itself.
    """

    def __init__(self, cluster: Cluster, idl: Idl, settler: Keypair, authority: Keypair) -> None:
        self.cluster = cluster
        self.idl = idl
        self.settler = settler
        self.authority = authority
        self.market = idl.market_address(authority.pubkey())
        self.mint_keypair = self._derived("mint", 0)
        self.mint = self.mint_keypair.pubkey()
        self.ready = False
        self._aggregators: dict[int, Party] = {}
        self._batteries: dict[int, Party] = {}
        self._lock = asyncio.Lock()

    # ---- keys and addresses ----------------------------------------------------------------

    def _derived(self, role: str, number: int) -> Keypair:
        secret = bytes(self.authority)[:32]
        seed = hashlib.sha256(b"etp-site-party|" + role.encode() + b"|" + secret
                              + struct.pack("<Q", number)).digest()
        return Keypair.from_seed(seed)

    def _party(self, keypair: Keypair, aggregator: bool) -> Party:
        owner = keypair.pubkey()
        return Party(
            keypair,
            associated_token_address(owner, self.mint),
            self.idl.reputation_address(self.market, owner),
            self.idl.escrow_address(self.market, owner) if aggregator else None,
            self.idl.vault_address(self.market, owner) if aggregator else None,
        )

    def aggregator_party(self, aggregator_id: int) -> Party:
        """The wallet of aggregator `aggregator_id` (addresses only: see ensure_aggregator)."""
        return self._party(self._derived("aggregator", aggregator_id), True)

    def battery_party(self, device_id: int) -> Party:
        """The wallet of the owner of battery `device_id` (each battery its own owner)."""
        return self._party(self._derived("battery", device_id), False)

    # ---- set-up ----------------------------------------------------------------------------

    async def set_up(self, aggregator_ids: list[int]) -> None:
        """Settler funded, mint, market, and every aggregator's wallet; idempotent."""
        async with self._lock:
            if getattr(self.cluster, "airdrop", None) is not None:
                # the settler pays each record's rent (0.0023 SOL): 100,000 SOL last ~40M
                # trades. On other clusters the operator funds settler and authority.
                await self._fund_sol(self.settler.pubkey(), 100_000 * 10**9)
                await self._fund_sol(self.authority.pubkey(), 10 * 10**9)
            mint_exists, market_exists = await self.cluster.accounts_exist([self.mint, self.market])
            if not mint_exists:
                await self._create_mint()
            if not market_exists:
                await self._execute(
                    [
                        self.idl.instruction(
                            "initialize_market",
                            {
                                "authority": self.authority.pubkey(),
                                "market": self.market,
                                "payment_mint": self.mint,
                                "token_program": TOKEN_PROGRAM,
                            },
                            {
                                "settler": self.settler.pubkey(),
                                "dispute_window_seconds": 7 * 24 * 3600,
                            },
                        )
                    ],
                    self.authority,
                )
        for aggregator_id in aggregator_ids:
            await self.ensure_aggregator(aggregator_id)
        self.ready = True

    async def ensure_aggregator(self, aggregator_id: int) -> Party:
        """Aggregator registered, escrow opened and funded with plenty (once)."""
        known = self._aggregators.get(aggregator_id)
        if known is not None:
            return known
        async with self._lock:
            party = self.aggregator_party(aggregator_id)
            registered, escrowed = await self.cluster.accounts_exist(
                [party.reputation, party.escrow or party.reputation]
            )
            if not escrowed:
                await self._fund_sol(party.pubkey, _PARTY_LAMPORTS)
                steps: list[Instruction] = []
                if not registered:
                    steps.append(self._register(party, ROLE_AGGREGATOR, []))
                steps.append(
                    self.idl.instruction(
                        "open_escrow",
                        {
                            "aggregator": party.pubkey,
                            "market": self.market,
                            "reputation": party.reputation,
                            "escrow": party.escrow or party.reputation,
                            "vault": party.vault or party.reputation,
                            "payment_mint": self.mint,
                            "token_program": TOKEN_PROGRAM,
                        },
                        {"max_price_per_kwh": _MAX_PRICE_PER_KWH},
                    )
                )
                await self._execute(steps, party.keypair)
                await self._execute(
                    [
                        self._create_token_account(party.pubkey, party.pubkey),
                        self._mint_to(party.token_account, _AGGREGATOR_TOKENS),
                    ],
                    party.keypair,
                    self.authority,
                )
                await self._execute(
                    [
                        self.idl.instruction(
                            "fund",
                            {
                                "aggregator": party.pubkey,
                                "market": self.market,
                                "escrow": party.escrow or party.reputation,
                                "vault": party.vault or party.reputation,
                                "source": party.token_account,
                                "payment_mint": self.mint,
                                "token_program": TOKEN_PROGRAM,
                            },
                            {"amount": _AGGREGATOR_TOKENS},
                        )
                    ],
                    party.keypair,
                )
            self._aggregators[aggregator_id] = party
            return party

    async def ensure_battery(self, device_id: int) -> Party:
        """Battery owner registered with the battery's device id, token account made (once)."""
        known = self._batteries.get(device_id)
        if known is not None:
            return known
        async with self._lock:
            party = self.battery_party(device_id)
            registered, has_account = await self.cluster.accounts_exist(
                [party.reputation, party.token_account]
            )
            if not (registered and has_account):
                await self._fund_sol(party.pubkey, _PARTY_LAMPORTS)
                steps = []
                if not registered:
                    steps.append(self._register(party, ROLE_BATTERY_OWNER, [device_id]))
                if not has_account:
                    steps.append(self._create_token_account(party.pubkey, party.pubkey))
                await self._execute(steps, party.keypair)
            self._batteries[device_id] = party
            return party

    # ---- instructions ----------------------------------------------------------------------

    def _register(self, party: Party, role: int, device_ids: list[int]) -> Instruction:
        return self.idl.instruction(
            "register_participant",
            {"owner": party.pubkey, "market": self.market, "reputation": party.reputation},
            {"role": role, "device_ids": device_ids},
        )

    def _create_token_account(self, payer: Pubkey, owner: Pubkey) -> Instruction:
        """CreateIdempotent of the associated token account program."""
        return Instruction(
            ASSOCIATED_TOKEN_PROGRAM,
            bytes([1]),
            [
                AccountMeta(payer, True, True),
                AccountMeta(associated_token_address(owner, self.mint), False, True),
                AccountMeta(owner, False, False),
                AccountMeta(self.mint, False, False),
                AccountMeta(SYSTEM_PROGRAM, False, False),
                AccountMeta(TOKEN_PROGRAM, False, False),
            ],
        )

    def _mint_to(self, account: Pubkey, amount: int) -> Instruction:
        return Instruction(  # SPL Token MintTo; the authority is the mint's authority
            TOKEN_PROGRAM,
            bytes([7]) + struct.pack("<Q", amount),
            [
                AccountMeta(self.mint, False, True),
                AccountMeta(account, False, True),
                AccountMeta(self.authority.pubkey(), True, False),
            ],
        )

    async def _create_mint(self) -> None:
        rent = 1_461_600  # rent exemption of an 82-byte mint (the runtime's default rent)
        await self._execute(
            [
                create_account(
                    CreateAccountParams(
                        from_pubkey=self.authority.pubkey(),
                        to_pubkey=self.mint,
                        lamports=rent,
                        space=_MINT_SIZE,
                        owner=TOKEN_PROGRAM,
                    )
                ),
                Instruction(  # InitializeMint2: decimals, mint authority, no freeze authority
                    TOKEN_PROGRAM,
                    bytes([20, TOKEN_DECIMALS]) + bytes(self.authority.pubkey()) + b"\0",
                    [AccountMeta(self.mint, False, True)],
                ),
            ],
            self.authority,
            self.mint_keypair,
        )

    # ---- sending ---------------------------------------------------------------------------

    async def _fund_sol(self, address: Pubkey, lamports: int) -> None:
        """Give `address` SOL: the embedded ledger's faucet, else a transfer from the settler
        (which then must hold SOL on that cluster)."""
        airdrop: Any = getattr(self.cluster, "airdrop", None)
        if airdrop is not None:
            await airdrop(address, lamports)
            return
        await self._execute(
            [transfer(TransferParams(from_pubkey=self.settler.pubkey(), to_pubkey=address,
                                     lamports=lamports))],
            self.settler,
        )

    async def _execute(self, instructions: list[Instruction], payer: Keypair,
                       *signers: Keypair) -> None:
        """Send one set-up transaction and wait until it is processed; SiteSetupError if
        the ledger refuses it."""
        keys = {payer.pubkey(): payer}
        for signer in signers:
            keys.setdefault(signer.pubkey(), signer)
        recent = await self.cluster.latest_blockhash()
        message = Message.new_with_blockhash(instructions, payer.pubkey(), recent.blockhash)
        transaction = VersionedTransaction(message, list(keys.values()))
        signature = await self.cluster.send(transaction)
        for _ in range(120):  # ~60 s: a real cluster confirms in seconds
            (state,) = await self.cluster.signature_states([signature])
            if state.confirmation is not None:
                if state.err is not None:
                    raise SiteSetupError(
                        f"set-up transaction refused by the ledger: {state.err}", state.err
                    )
                return
            if await self.cluster.block_height() > recent.last_valid_block_height:
                raise SiteSetupError("set-up transaction expired before it landed; retrying")
            await asyncio.sleep(0.5)
        raise SiteSetupError("set-up transaction not confirmed within 60 s")
