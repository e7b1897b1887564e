"""The ledger as the hub's settlement code addresses it: program ids, key files, a party's
accounts, and sending a transaction until it lands. Everything else in hub/settlement builds
on this module."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from pathlib import Path

from solders.instruction import Instruction
from solders.keypair import Keypair
from solders.message import Message
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from hub.settlement.cluster import Cluster
from hub.settlement.program import Idl

__all__ = [
    "ASSOCIATED_TOKEN_PROGRAM",
    "SYSTEM_PROGRAM",
    "TOKEN_2022_PROGRAM",
    "TOKEN_PROGRAM",
    "KeyFileError",
    "Party",
    "PartyNotReady",
    "SiteSetupError",
    "associated_token_address",
    "execute",
    "load_keypair",
    "load_or_create_keypair",
    "party_accounts",
    "signer_of",
]

TOKEN_PROGRAM = Pubkey.from_string("TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA")
ASSOCIATED_TOKEN_PROGRAM = Pubkey.from_string("ATokenGPvbdGVxr1b2hvZbsiqW5xWH25efTNsLJA8knL")
SYSTEM_PROGRAM = Pubkey.from_string("11111111111111111111111111111111")
TOKEN_2022_PROGRAM = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")


class KeyFileError(RuntimeError):
    """A key file exists but does not hold a keypair."""


class SiteSetupError(RuntimeError):
    """A set-up transaction was refused by the ledger (`err`: its error, None if it did not
    land in time)."""

    def __init__(self, message: str, err: object | None = None) -> None:
        super().__init__(message)
        self.err = err


def load_keypair(path: Path) -> Keypair:
    """The keypair in an existing file (JSON array of 64 bytes); KeyFileError otherwise."""
    if not path.is_file():
        raise KeyFileError(f"no keypair file at {path}")
    try:
        return Keypair.from_bytes(bytes(json.loads(path.read_text())))
    except (ValueError, TypeError) as exc:
        raise KeyFileError(
            f"{path} must hold a keypair as a JSON array of 64 bytes; fix or delete it"
        ) from exc


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
    return load_keypair(path)


def signer_of(party: Party) -> Keypair:
    if party.keypair is None:
        raise SiteSetupError(f"the hub holds no key of {party.owner}: it cannot sign for it")
    return party.keypair


@dataclass(frozen=True)
class Party:
    """A market participant: its wallet (public key), token account and Reputation PDA (and,
    for an aggregator, escrow and vault PDAs). `keypair` only where the hub holds the key
    (the demo's parties); on a real network a party's secret stays with the party."""

    owner: Pubkey
    token_account: Pubkey
    reputation: Pubkey
    escrow: Pubkey | None = None
    vault: Pubkey | None = None
    keypair: Keypair | None = None

    @property
    def pubkey(self) -> Pubkey:
        return self.owner


def associated_token_address(
    owner: Pubkey, mint: Pubkey, token_program: Pubkey = TOKEN_PROGRAM
) -> Pubkey:
    """The owner's associated token account for `mint` (SPL Token or Token-2022)."""
    return Pubkey.find_program_address(
        [bytes(owner), bytes(token_program), bytes(mint)], ASSOCIATED_TOKEN_PROGRAM
    )[0]


def party_accounts(
    idl: Idl,
    market: Pubkey,
    mint: Pubkey,
    token_program: Pubkey,
    owner: Pubkey,
    *,
    aggregator: bool,
    keypair: Keypair | None = None,
) -> Party:
    """The addresses of `owner`'s accounts in `market`."""
    return Party(
        owner,
        associated_token_address(owner, mint, token_program),
        idl.reputation_address(market, owner),
        idl.escrow_address(market, owner) if aggregator else None,
        idl.vault_address(market, owner) if aggregator else None,
        keypair,
    )


async def execute(
    cluster: Cluster, instructions: list[Instruction], payer: Keypair, *signers: Keypair
) -> Signature:
    """Send one transaction and wait until it is processed (about 60 s at most);
    SiteSetupError if the ledger refuses it or it expires."""
    keys = {payer.pubkey(): payer}
    for signer in signers:
        keys.setdefault(signer.pubkey(), signer)
    recent = await cluster.latest_blockhash()
    message = Message.new_with_blockhash(instructions, payer.pubkey(), recent.blockhash)
    transaction = VersionedTransaction(message, list(keys.values()))
    signature = await cluster.send(transaction)
    for _ in range(120):  # ~60 s: a real cluster confirms in seconds
        (state,) = await cluster.signature_states([signature])
        if state.confirmation is not None:
            if state.err is not None:
                raise SiteSetupError(f"transaction refused by the ledger: {state.err}", state.err)
            return signature
        if await cluster.block_height() > recent.last_valid_block_height:
            raise SiteSetupError("transaction expired before it landed; try again")
        await asyncio.sleep(0.5)
    raise SiteSetupError("transaction not confirmed within 60 s")


class PartyNotReady(Exception):
    """A party of a trade has no usable wallet yet (not registered with the hub, or its
    accounts are not on the ledger): its trades wait, the others settle."""
