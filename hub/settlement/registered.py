"""A market on a real network (devnet, mainnet, or a localnet run that way): made by its
authority (`etp settle market init`), paying in a real token, with parties that hold their
own keys. The hub holds only the settler key; it learns the parties' wallets from the store
(`etp wallet add`) and checks on the ledger that each registered itself (`etp wallet
register`) before it settles a trade of theirs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from solders.keypair import Keypair
from solders.pubkey import Pubkey

from hub.settlement.cluster import Cluster
from hub.settlement.ledger import Party, PartyNotReady, SiteSetupError, party_accounts
from hub.settlement.onboard import market_view
from hub.settlement.program import Idl

__all__ = ["HUB_PRICE_DECIMALS", "RegisteredSite", "WalletLookup"]

# The hub's prices are milli-cents: 10^5 per currency unit. A token with d >= 5 decimals has
# 10^(d-5) base units per milli-cent; fewer decimals could not carry the hub's prices exactly.
HUB_PRICE_DECIMALS = 5
_NOT_READY_RECHECK_S = 10.0  # a party found not ready is asked about again after this

WalletLookup = Callable[[str, int], Awaitable[str | None]]  # (role, id) -> base58 or None


class RegisteredSite:
    """The market at `market`, settled by `settler`; parties' wallets from `wallets`."""

    def __init__(
        self, cluster: Cluster, idl: Idl, settler: Keypair, market: Pubkey, wallets: WalletLookup
    ) -> None:
        self.cluster = cluster
        self.idl = idl
        self.settler = settler
        self.market = market
        self.mint = Pubkey.default()
        self.token_program = Pubkey.default()
        self.price_scale = 1
        self.ready = False
        self._wallets = wallets
        self._parties: dict[tuple[str, int], tuple[str, Party]] = {}
        self._not_ready: dict[tuple[str, int], tuple[float, str]] = {}

    async def set_up(self, aggregator_ids: list[int]) -> None:
        """Read the market and check this hub is its settler (SiteSetupError otherwise)."""
        fields = await market_view(self.cluster, self.idl, self.market)
        if fields["settler"] != self.settler.pubkey():
            raise SiteSetupError(
                f"the market's settler is {fields['settler']}, but this hub's settler key is "
                f"{self.settler.pubkey()}: the market authority runs `etp settle market "
                "rotate-settler` with this hub's key, or the hub is given the right key file"
            )
        decimals = int(str(fields["mint_decimals"]))
        if decimals < HUB_PRICE_DECIMALS:
            raise SiteSetupError(
                f"the market's token has {decimals} decimals; the hub's prices are in "
                f"milli-cents and need at least {HUB_PRICE_DECIMALS}"
            )
        mint, token_program = fields["payment_mint"], fields["token_program"]
        assert isinstance(mint, Pubkey) and isinstance(token_program, Pubkey)
        self.mint, self.token_program = mint, token_program
        self.price_scale = 10 ** (decimals - HUB_PRICE_DECIMALS)
        self.ready = True

    async def ensure_aggregator(self, aggregator_id: int) -> Party:
        return await self._ready("aggregator", aggregator_id)

    async def ensure_battery(self, device_id: int) -> Party:
        return await self._ready("battery", device_id)

    async def _ready(self, role: str, party_id: int) -> Party:
        """The party's accounts if its wallet is registered with the hub and on the ledger;
        PartyNotReady (remembered for a few seconds, so waiting trades cost no RPC calls)."""
        key = (role, party_id)
        missing = self._not_ready.get(key)
        if missing is not None and time.monotonic() < missing[0]:
            raise PartyNotReady(missing[1])
        pubkey = await self._wallets(role, party_id)
        known = self._parties.get(key)
        if known is not None and known[0] == pubkey:
            return known[1]
        try:
            found = await self._check(role, party_id, pubkey)
        except PartyNotReady as exc:
            self._not_ready[key] = (time.monotonic() + _NOT_READY_RECHECK_S, str(exc))
            raise
        self._not_ready.pop(key, None)
        assert pubkey is not None
        self._parties[key] = (pubkey, found)
        return found

    async def _check(self, role: str, party_id: int, pubkey: str | None) -> Party:
        what = f"aggregator {party_id}" if role == "aggregator" else f"battery {party_id}'s owner"
        if pubkey is None:
            raise PartyNotReady(f"{what} has no wallet: `etp wallet add {role} {party_id} PUBKEY`")
        accounts = party_accounts(
            self.idl,
            self.market,
            self.mint,
            self.token_program,
            Pubkey.from_string(pubkey),
            aggregator=role == "aggregator",
        )
        needed = [
            accounts.reputation,
            accounts.escrow if accounts.escrow is not None else accounts.token_account,
        ]
        reputation, other = await self.cluster.get_accounts(needed)
        if reputation is None or other is None:
            step = (
                "register and open its escrow"
                if role == "aggregator"
                else (
                    "register (with its device ids) and have a token account for the market's token"
                )
            )
            raise PartyNotReady(
                f"{what} ({pubkey}) is not ready on the ledger: it must {step} "
                f"(`etp wallet register --keypair ...`)"
            )
        if role == "battery":
            _, fields = self.idl.decode_account(reputation.data)
            devices = fields["device_ids"][: int(str(fields["device_count"]))]  # type: ignore[index]
            if party_id not in devices:
                raise PartyNotReady(
                    f"{what} ({pubkey}) registered devices {list(devices)}, not {party_id}"
                )
        return accounts
