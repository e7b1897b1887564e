"""What the settlement service needs from a Solana cluster, whichever it is: the embedded
LiteSVM ledger (in process), or a real cluster over JSON-RPC (localnet, devnet, mainnet).
The service builds and signs transactions itself (solders); a cluster only carries them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

__all__ = ["AccountInfo", "Blockhash", "Cluster", "ClusterUnavailableError", "SignatureState"]


class ClusterUnavailableError(Exception):
    """The cluster did not answer (network, timeout, 5xx, rate limit): try again later. Any
    other failure (a transaction refused by the runtime) is reported in its SignatureState."""


@dataclass(frozen=True)
class Blockhash:
    """A recent blockhash and the last block height at which a transaction using it can land."""

    blockhash: Hash
    last_valid_block_height: int


@dataclass(frozen=True)
class SignatureState:
    """Where a sent transaction stands: not seen (None everywhere), processed/confirmed/
    finalized, and its error if the runtime refused it (`err` as the cluster reports it)."""

    confirmation: str | None  # None | "processed" | "confirmed" | "finalized"
    err: object | None = None
    slot: int | None = None


@dataclass(frozen=True)
class AccountInfo:
    """An account as the ledger holds it: the program that owns it, its lamports and data."""

    owner: Pubkey
    lamports: int
    data: bytes


class Cluster(Protocol):
    """A Solana cluster as the settlement service uses it. Every method may raise
    ClusterUnavailableError; none retries on its own (the service decides)."""

    name: str  # embedded | localnet | devnet | mainnet

    async def latest_blockhash(self) -> Blockhash:
        """A blockhash to sign with (commitment confirmed)."""

    async def block_height(self) -> int:
        """The current block height (to tell when a blockhash expired)."""

    async def slot(self) -> int:
        """The current slot (commitment confirmed: one the ledger's SlotHashes knows)."""

    async def send(self, transaction: VersionedTransaction) -> Signature:
        """Send a signed transaction (preflight skipped: the service simulates first); returns
        its signature. Sending the same transaction twice is harmless."""

    async def simulate(self, transaction: VersionedTransaction) -> tuple[object | None, int]:
        """(error or None, compute units consumed) of running the transaction now."""

    async def signature_states(self, signatures: Sequence[Signature]) -> list[SignatureState]:
        """The state of each signature, in order (searching the transaction history)."""

    async def accounts_exist(self, addresses: Sequence[Pubkey]) -> list[bool]:
        """Whether each account exists (e.g. a TradeRecord: the trade was settled)."""

    async def get_accounts(self, addresses: Sequence[Pubkey]) -> list[AccountInfo | None]:
        """Each account (None if it does not exist), e.g. a market or a Reputation to decode."""

    async def token_balance(self, token_account: Pubkey) -> int:
        """The balance of a token account in base units (0 if it does not exist)."""

    async def priority_fee(self, writable: Sequence[Pubkey]) -> int:
        """A compute-unit price (micro-lamports) from recent fees paid for these accounts."""

    async def close(self) -> None:
        """Release connections."""
