"""Store API for wallets: which ledger public key pays or is paid for an aggregator or a
battery's owner."""

from __future__ import annotations

import sqlalchemy as sa

from hub.store.errors import InvalidValueError
from hub.store.models import WALLETS, WalletRow
from hub.store.parts import StoreParts
from hub.store.validate import check_ints, check_text, now_ms, to_row

__all__ = ["WALLET_ROLES", "WalletStore"]

WALLET_ROLES = ("aggregator", "battery")


def _check(site: str, role: str, party_id: int) -> None:
    check_text("site", site, 64)
    if role not in WALLET_ROLES:
        raise InvalidValueError(f"role must be one of {', '.join(WALLET_ROLES)}, not {role!r}")
    check_ints(party_id=party_id)


class WalletStore(StoreParts):
    """Public keys only: the hub never holds a participant's secret key on a real network."""

    async def set_wallet(self, site: str, role: str, party_id: int, pubkey: str) -> WalletRow:
        """Register (or replace) the wallet of aggregator / battery `party_id`. The caller
        checks `pubkey` is a valid base58 public key."""
        _check(site, role, party_id)
        check_text("pubkey", pubkey, 44)
        key = (WALLETS.c.site == site, WALLETS.c.role == role, WALLETS.c.party_id == party_id)
        updated_ms = now_ms()
        values = {"pubkey": pubkey, "updated_ms": updated_ms}
        async with self._db.transaction() as connection:
            result = await connection.execute(WALLETS.update().where(*key).values(values))
            if result.rowcount == 0:
                await connection.execute(
                    WALLETS.insert().values(site=site, role=role, party_id=party_id, **values)
                )
        return WalletRow(site, role, party_id, pubkey, updated_ms)

    async def remove_wallet(self, site: str, role: str, party_id: int) -> bool:
        """Forget a wallet; False if none was registered."""
        _check(site, role, party_id)
        async with self._db.transaction() as connection:
            result = await connection.execute(
                WALLETS.delete().where(WALLETS.c.site == site, WALLETS.c.role == role,
                                       WALLETS.c.party_id == party_id)
            )
        return bool(result.rowcount)

    async def list_wallets(self, site: str) -> list[WalletRow]:
        """Every wallet of `site`, aggregators first, by id."""
        check_text("site", site, 64)
        query = (sa.select(WALLETS).where(WALLETS.c.site == site)
                 .order_by(WALLETS.c.role, WALLETS.c.party_id))
        return [to_row(WalletRow, row) for row in await self._db.fetch(query)]
