"""Joining a market: the instructions a market's authority and its parties sign with their own
keys (`etp settle market ...`, `etp wallet register|fund`), and the hub's demo site signs for
the parties it plays itself. One builder per instruction, used by both."""

from __future__ import annotations

from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from hub.settlement.cluster import Cluster
from hub.settlement.ledger import (
    ASSOCIATED_TOKEN_PROGRAM,
    SYSTEM_PROGRAM,
    TOKEN_2022_PROGRAM,
    TOKEN_PROGRAM,
    Party,
    SiteSetupError,
    associated_token_address,
    execute,
    party_accounts,
)
from hub.settlement.program import Idl

__all__ = [
    "ROLE_AGGREGATOR",
    "ROLE_BATTERY_OWNER",
    "Market",
    "create_token_account",
    "deposit",
    "fund",
    "init_market",
    "market_view",
    "open_escrow",
    "read_market",
    "register",
    "register_instruction",
    "rotate_settler",
]

ROLE_BATTERY_OWNER = 0
ROLE_AGGREGATOR = 1
DEFAULT_MAX_PRICE_PER_KWH = 10**9  # an aggregator's own cap on chain (base units per kWh)


class Market:
    """A market's addresses as its parties need them."""

    def __init__(
        self,
        idl: Idl,
        address: Pubkey,
        mint: Pubkey,
        token_program: Pubkey,
        authority: Pubkey,
        settler: Pubkey,
        decimals: int,
    ) -> None:
        self.idl = idl
        self.address = address
        self.mint = mint
        self.token_program = token_program
        self.authority = authority
        self.settler = settler
        self.decimals = decimals

    def party(self, owner: Pubkey, *, aggregator: bool, keypair: Keypair | None = None) -> Party:
        return party_accounts(
            self.idl,
            self.address,
            self.mint,
            self.token_program,
            owner,
            aggregator=aggregator,
            keypair=keypair,
        )


# ---- instruction builders ----------------------------------------------------------------


def register_instruction(
    market: Market, party: Party, role: int, device_ids: list[int]
) -> Instruction:
    return market.idl.instruction(
        "register_participant",
        {"owner": party.owner, "market": market.address, "reputation": party.reputation},
        {"role": role, "device_ids": device_ids},
    )


def open_escrow(market: Market, party: Party, max_price_per_kwh: int) -> Instruction:
    assert party.escrow is not None and party.vault is not None
    return market.idl.instruction(
        "open_escrow",
        {
            "aggregator": party.owner,
            "market": market.address,
            "reputation": party.reputation,
            "escrow": party.escrow,
            "vault": party.vault,
            "payment_mint": market.mint,
            "token_program": market.token_program,
        },
        {"max_price_per_kwh": max_price_per_kwh},
    )


def fund(market: Market, party: Party, amount: int) -> Instruction:
    assert party.escrow is not None and party.vault is not None
    return market.idl.instruction(
        "fund",
        {
            "aggregator": party.owner,
            "market": market.address,
            "escrow": party.escrow,
            "vault": party.vault,
            "source": party.token_account,
            "payment_mint": market.mint,
            "token_program": market.token_program,
        },
        {"amount": amount},
    )


def create_token_account(market: Market, payer: Pubkey, owner: Pubkey) -> Instruction:
    """CreateIdempotent of the associated token account program."""
    return Instruction(
        ASSOCIATED_TOKEN_PROGRAM,
        bytes([1]),
        [
            AccountMeta(payer, True, True),
            AccountMeta(
                associated_token_address(owner, market.mint, market.token_program), False, True
            ),
            AccountMeta(owner, False, False),
            AccountMeta(market.mint, False, False),
            AccountMeta(SYSTEM_PROGRAM, False, False),
            AccountMeta(market.token_program, False, False),
        ],
    )


# ---- flows (each checks the ledger first: running one twice is harmless) ------------------


async def market_view(cluster: Cluster, idl: Idl, market: Pubkey) -> dict[str, object]:
    """The Market account's fields; SiteSetupError if there is no market at that address."""
    (account,) = await cluster.get_accounts([market])
    if account is None:
        raise SiteSetupError(
            f"no market at {market} on this ledger: the market authority creates it with "
            "`etp settle market init`, then ETP_SETTLEMENT_MARKET names it"
        )
    if account.owner != idl.program_id:
        raise SiteSetupError(f"{market} is not an account of the program {idl.program_id}")
    name, fields = idl.decode_account(account.data)
    if name != "Market":
        raise SiteSetupError(f"{market} is a {name} account, not a Market")
    return fields


async def read_market(cluster: Cluster, idl: Idl, address: Pubkey) -> Market:
    """The market at `address` (SiteSetupError if there is none)."""
    fields = await market_view(cluster, idl, address)
    mint, program, authority, settler = (
        fields[name] for name in ("payment_mint", "token_program", "authority", "settler")
    )
    assert isinstance(mint, Pubkey) and isinstance(program, Pubkey)
    assert isinstance(authority, Pubkey) and isinstance(settler, Pubkey)
    return Market(idl, address, mint, program, authority, settler,
                  int(str(fields["mint_decimals"])))


async def init_market(
    cluster: Cluster,
    idl: Idl,
    authority: Keypair,
    mint: Pubkey,
    settler: Pubkey,
    dispute_window_s: int,
) -> Market:
    """Create the market of `authority` (its address is the PDA of the authority) paying in
    `mint` (SPL Token or Token-2022, read from the mint's owner), settled by `settler`."""
    address = idl.market_address(authority.pubkey())
    mint_account, existing = await cluster.get_accounts([mint, address])
    if mint_account is None:
        raise SiteSetupError(f"no mint at {mint} on this ledger")
    if mint_account.owner not in (TOKEN_PROGRAM, TOKEN_2022_PROGRAM):
        raise SiteSetupError(f"{mint} is not a token mint (owner {mint_account.owner})")
    if existing is None:
        await execute(
            cluster,
            [
                idl.instruction(
                    "initialize_market",
                    {
                        "authority": authority.pubkey(),
                        "market": address,
                        "payment_mint": mint,
                        "token_program": mint_account.owner,
                    },
                    {"settler": settler, "dispute_window_seconds": dispute_window_s},
                )
            ],
            authority,
        )
    return await read_market(cluster, idl, address)


async def rotate_settler(
    cluster: Cluster, market: Market, authority: Keypair, new_settler: Pubkey
) -> None:
    """Hand settlement of the market to another hub key (market authority only)."""
    await execute(
        cluster,
        [
            market.idl.instruction(
                "rotate_settler",
                {"authority": authority.pubkey(), "market": market.address},
                {"new_settler": new_settler},
            )
        ],
        authority,
    )


async def register(
    cluster: Cluster,
    market: Market,
    owner: Keypair,
    *,
    aggregator: bool,
    device_ids: list[int],
    max_price_per_kwh: int = DEFAULT_MAX_PRICE_PER_KWH,
) -> Party:
    """Register `owner` in the market (a battery owner with its device ids, or an aggregator)
    and make what it needs to be paid (a token account) or to pay (escrow and vault)."""
    party = market.party(owner.pubkey(), aggregator=aggregator, keypair=owner)
    watched = [party.reputation, party.token_account]
    if aggregator:
        assert party.escrow is not None
        watched.append(party.escrow)
    found = [account is not None for account in await cluster.get_accounts(watched)]
    steps: list[Instruction] = []
    if not found[0]:
        steps.append(
            register_instruction(
                market,
                party,
                ROLE_AGGREGATOR if aggregator else ROLE_BATTERY_OWNER,
                [] if aggregator else device_ids,
            )
        )
    if not found[1]:
        steps.append(create_token_account(market, owner.pubkey(), owner.pubkey()))
    if aggregator and not found[2]:
        steps.append(open_escrow(market, party, max_price_per_kwh))
    if steps:
        await execute(cluster, steps, owner)
    return party


async def deposit(cluster: Cluster, market: Market, aggregator: Keypair, amount: int) -> int:
    """Move `amount` base units from the aggregator's token account into its escrow;
    returns the escrow vault's balance after."""
    party = market.party(aggregator.pubkey(), aggregator=True, keypair=aggregator)
    assert party.vault is not None
    have = await cluster.token_balance(party.token_account)
    if have < amount:
        raise SiteSetupError(
            f"the aggregator's token account {party.token_account} holds {have} base units, "
            f"less than {amount}"
        )
    await execute(cluster, [fund(market, party, amount)], aggregator)
    return await cluster.token_balance(party.vault)
