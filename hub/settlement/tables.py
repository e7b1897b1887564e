"""Address lookup tables of the settler: the accounts settlements repeat (program, market,
token, aggregators' escrows, vaults and reputations, battery owners' reputations and token
accounts) sit in tables, so a v0 transaction names each with a 1-byte index instead of 32
bytes and carries 9 trades (the program's bound) instead of 4 (anchor/README.md).

A table is made and extended by the settler (it pays the rent: ~0.0003 SOL per address) and
is usable one slot after each extension. The tables' addresses are kept in a file in the data
dir (a restarted hub reuses them); the embedded ledger starts empty, so there they are made
anew. Any failure here only costs size: the service settles without tables meanwhile."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections.abc import Iterable
from pathlib import Path

import structlog
from solders.address_lookup_table_account import (
    ID as LOOKUP_TABLE_PROGRAM,
)
from solders.address_lookup_table_account import (
    AddressLookupTable,
    AddressLookupTableAccount,
    derive_lookup_table_address,
)
from solders.instruction import AccountMeta, Instruction
from solders.keypair import Keypair
from solders.pubkey import Pubkey

from hub.settlement.cluster import Cluster, ClusterUnavailableError
from hub.settlement.ledger import SYSTEM_PROGRAM, SiteSetupError, execute

__all__ = ["TABLE_CAPACITY", "LookupTables"]

log = structlog.get_logger("hub.settlement")

TABLE_CAPACITY = 256  # addresses per table (the runtime's limit)
_PER_EXTEND = 20  # addresses per extend transaction (32 bytes each; stays under 1,232)
_RETRY_AFTER_S = 60.0  # after a failure, settle without new tables this long


def _create(authority: Pubkey, recent_slot: int) -> tuple[Pubkey, Instruction]:
    table, bump = derive_lookup_table_address(authority, recent_slot)
    return table, Instruction(
        LOOKUP_TABLE_PROGRAM,
        struct.pack("<IQB", 0, recent_slot, bump),  # CreateLookupTable
        [
            AccountMeta(table, False, True),
            AccountMeta(authority, True, False),
            AccountMeta(authority, True, True),  # payer
            AccountMeta(SYSTEM_PROGRAM, False, False),
        ],
    )


def _extend(table: Pubkey, authority: Pubkey, addresses: list[Pubkey]) -> Instruction:
    return Instruction(
        LOOKUP_TABLE_PROGRAM,
        struct.pack("<IQ", 2, len(addresses)) + b"".join(bytes(a) for a in addresses),
        [
            AccountMeta(table, False, True),
            AccountMeta(authority, True, False),
            AccountMeta(authority, True, True),  # payer
            AccountMeta(SYSTEM_PROGRAM, False, False),
        ],
    )


class LookupTables:
    """The settler's tables: `usable()` for compiling, `include()` to add addresses."""

    def __init__(self, cluster: Cluster, settler: Keypair, state_file: Path | None) -> None:
        self.cluster = cluster
        self.settler = settler
        self.state_file = state_file
        self._tables: dict[Pubkey, list[Pubkey]] = {}  # table -> its addresses, in order
        self._active_from: dict[Pubkey, int] = {}  # table -> slot from which all are usable
        self._known: set[Pubkey] = set()
        self._loaded = False
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.stats = {"tables": 0, "addresses": 0, "failures": 0}

    def usable(self, slot: int) -> list[AddressLookupTableAccount]:
        """Tables whose every address can be used by a transaction landing from `slot` on."""
        return [
            AddressLookupTableAccount(table, addresses)
            for table, addresses in self._tables.items()
            if addresses and self._active_from.get(table, 0) <= slot
        ]

    def missing(self, addresses: Iterable[Pubkey]) -> list[Pubkey]:
        return [a for a in dict.fromkeys(addresses) if a not in self._known]

    async def include(self, addresses: Iterable[Pubkey]) -> None:
        """Put every address not yet in a table into one (creating tables as they fill);
        returns once they are usable (the next slot: a fraction of a second, worth waiting
        for once per new party) or failed (then settlement goes on without them)."""
        if time.monotonic() < self._paused_until:
            return
        async with self._lock:
            try:
                await self._load()
                wanted = self.missing(addresses)
                while wanted:
                    table = await self._table_with_room()
                    room = TABLE_CAPACITY - len(self._tables[table])
                    take = min(room, _PER_EXTEND)
                    chunk, wanted = wanted[:take], wanted[take:]
                    await execute(self.cluster, [_extend(table, self.settler.pubkey(), chunk)],
                                  self.settler)
                    self._tables[table].extend(chunk)
                    self._known.update(chunk)
                    self._active_from[table] = await self.cluster.slot() + 1
                    self.stats["addresses"] += len(chunk)
                await self._until_active()
            except (SiteSetupError, ClusterUnavailableError) as exc:
                self.stats["failures"] += 1
                self._paused_until = time.monotonic() + _RETRY_AFTER_S
                log.warning("lookup tables not extended: settling without them for a while",
                            error=str(exc), retry_s=_RETRY_AFTER_S)

    async def _until_active(self, timeout_s: float = 5.0) -> None:
        newest = max(self._active_from.values(), default=0)
        deadline = time.monotonic() + timeout_s
        while await self.cluster.slot() < newest and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def _table_with_room(self) -> Pubkey:
        for table, addresses in self._tables.items():
            if len(addresses) < TABLE_CAPACITY:
                return table
        slot = await self.cluster.slot()
        table, create = _create(self.settler.pubkey(), slot)
        await execute(self.cluster, [create], self.settler)
        self._tables[table] = []
        self.stats["tables"] += 1
        self._save()
        log.info("lookup table created", table=str(table))
        return table

    async def _load(self) -> None:
        """The tables named in the state file that exist on this ledger, with their
        addresses as the ledger holds them."""
        if self._loaded:
            return
        self._loaded = True
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            names = [Pubkey.from_string(text) for text in json.loads(self.state_file.read_text())]
        except (ValueError, TypeError) as exc:
            log.warning("lookup table file unreadable: making new tables", error=str(exc))
            return
        for table, account in zip(names, await self.cluster.get_accounts(names), strict=True):
            if account is None or account.owner != LOOKUP_TABLE_PROGRAM:
                continue
            state = AddressLookupTable.deserialize(account.data)
            if state.meta.authority != self.settler.pubkey():
                continue
            self._tables[table] = list(state.addresses)
            self._known.update(state.addresses)

    def _save(self) -> None:
        if self.state_file is None:
            return
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps([str(t) for t in self._tables]) + "\n")
