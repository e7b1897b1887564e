"""The demo's site on the ledger: the hub's keys (0600 files), a test mint, the market, and a
wallet per aggregator (registered, escrow opened and funded) and per battery owner
(registered with its device), all made by the hub, which plays every party itself (embedded
ledger, localnet). Every step checks the ledger first, so set-up is idempotent. On a real
network the parties hold their own keys: see registered.py."""

from __future__ import annotations

import asyncio
import hashlib
import struct
from typing import Any, Protocol

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey
from solders.system_program import CreateAccountParams, TransferParams, create_account, transfer

from hub.settlement.cluster import Cluster
from hub.settlement.ledger import (
    TOKEN_PROGRAM,
    KeyFileError,
    Party,
    PartyNotReady,
    SiteSetupError,
    execute,
    load_or_create_keypair,
    signer_of,
)
from hub.settlement.onboard import Market, fund, register
from hub.settlement.program import Idl

__all__ = [
    "TOKEN_DECIMALS",
    "TOKEN_PROGRAM",
    "KeyFileError",
    "MarketSite",
    "Party",
    "PartyNotReady",
    "Site",
    "SiteSetupError",
    "load_or_create_keypair",
]

# One base unit of the test token is one milli-cent: the hub's prices (mc per kWh) are the
# program's price_per_kwh as they are, and amount = price x Wh / 1000 is in milli-cents.
TOKEN_DECIMALS = 5
_MINT_SIZE = 82
_PARTY_LAMPORTS = 1 * 10**9  # rent of a party's accounts and its fees (embedded: airdropped)
_AGGREGATOR_TOKENS = 10**15  # "plenty": 10 billion dollars in milli-cents per aggregator
_DISPUTE_WINDOW_S = 7 * 24 * 3600


class MarketSite(Protocol):
    """The market the settlement service settles in, and the wallets of the parties: made
    by the hub itself (Site: the embedded ledger, localnet), or registered by their owners on
    a real network (RegisteredSite)."""

    cluster: Cluster
    idl: Idl
    settler: Keypair
    market: Pubkey
    mint: Pubkey
    token_program: Pubkey
    price_scale: int  # token base units per milli-cent
    ready: bool

    async def set_up(self, aggregator_ids: list[int]) -> None:
        """Check (or make) the market; sets `ready`."""

    async def ensure_aggregator(self, aggregator_id: int) -> Party:
        """The buyer's accounts, ready to pay (PartyNotReady if not yet)."""

    async def ensure_battery(self, device_id: int) -> Party:
        """The seller's accounts, ready to be paid (PartyNotReady if not yet)."""


class Site:
    """One market on one ledger, and the parties the hub acts for.

    The settler and the market authority are keys in files (0600). Participants' keys are
    derived from the authority's secret and their hub id (aggregator id, device id): the hub
    holds them in the demo, where it plays the aggregators and battery owners itself.
    """

    def __init__(self, cluster: Cluster, idl: Idl, settler: Keypair, authority: Keypair,
                 *, dispute_window_s: int = _DISPUTE_WINDOW_S) -> None:
        self.cluster = cluster
        self.dispute_window_s = dispute_window_s
        self.idl = idl
        self.settler = settler
        self.authority = authority
        self.market = idl.market_address(authority.pubkey())
        self.mint_keypair = self._derived("mint", 0)
        self.mint = self.mint_keypair.pubkey()
        self.token_program = TOKEN_PROGRAM
        self.price_scale = 1  # TOKEN_DECIMALS = 5: one base unit is one milli-cent
        self.ready = False
        self._aggregators: dict[int, Party] = {}
        self._batteries: dict[int, Party] = {}
        self._lock = asyncio.Lock()
        self.view = Market(idl, self.market, self.mint, TOKEN_PROGRAM, authority.pubkey(),
                           settler.pubkey(), TOKEN_DECIMALS)

    # ---- keys and addresses ----------------------------------------------------------------

    def _derived(self, role: str, number: int) -> Keypair:
        secret = bytes(self.authority)[:32]
        seed = hashlib.sha256(b"etp-site-party|" + role.encode() + b"|" + secret
                              + struct.pack("<Q", number)).digest()
        return Keypair.from_seed(seed)

    def _party(self, keypair: Keypair, aggregator: bool) -> Party:
        return self.view.party(keypair.pubkey(), aggregator=aggregator, keypair=keypair)

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
                await execute(self.cluster, [self.idl.instruction(
                    "initialize_market",
                    {"authority": self.authority.pubkey(), "market": self.market,
                     "payment_mint": self.mint, "token_program": TOKEN_PROGRAM},
                    {"settler": self.settler.pubkey(),
                     "dispute_window_seconds": self.dispute_window_s},
                )], self.authority)
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
            (escrowed,) = await self.cluster.accounts_exist([party.escrow or party.reputation])
            if not escrowed:
                await self._fund_sol(party.pubkey, _PARTY_LAMPORTS)
                await register(self.cluster, self.view, signer_of(party), aggregator=True,
                               device_ids=[])
                await execute(self.cluster, [self._mint_to(party.token_account,
                                                           _AGGREGATOR_TOKENS)], self.authority)
                await execute(self.cluster, [fund(self.view, party, _AGGREGATOR_TOKENS)],
                              signer_of(party))
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
                await register(self.cluster, self.view, signer_of(party), aggregator=False,
                               device_ids=[device_id])
            self._batteries[device_id] = party
            return party

    # ---- the test mint ---------------------------------------------------------------------

    def mint_instruction(self, account: Pubkey, amount: int) -> Instruction:
        """Mint `amount` of the test token to `account` (signed by the authority, the mint's
        authority): refunds of resolved disputes come from the authority's tokens."""
        return self._mint_to(account, amount)

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
        await execute(
            self.cluster,
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
        await execute(
            self.cluster,
            [transfer(TransferParams(from_pubkey=self.settler.pubkey(), to_pubkey=address,
                                     lamports=lamports))],
            self.settler,
        )
