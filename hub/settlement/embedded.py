"""EmbeddedCluster: a Solana ledger inside the hub process (LiteSVM, mainnet features) with the
etp_settlement program deployed through the BPF Upgradeable Loader, behind the Cluster
interface. Its state lives in memory only: a restarted hub starts a new ledger."""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from typing import Any

from solders.hash import Hash
from solders.keypair import Keypair
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata
from solders.transaction_status import InstructionErrorCustom, TransactionErrorInstructionError

from hub.settlement.cluster import (
    AccountInfo,
    Blockhash,
    ClusterUnavailableError,
    SignatureState,
)
from hub.settlement.deploy import DeployError, deploy_upgradeable

__all__ = ["BLOCKHASH_LIFETIME_BLOCKS", "EmbeddedCluster", "LoaderError"]

BLOCKHASH_LIFETIME_BLOCKS = 150  # a blockhash is usable for this many blocks (as on Solana)


class LoaderError(RuntimeError):
    """Deploying the program through the upgradeable loader failed (the runtime's reason)."""


def _error_json(err: Any) -> Any:
    """A runtime error in the form a JSON-RPC node reports it, e.g.
    {"InstructionError": [0, {"Custom": 6013}]} or "InsufficientFundsForFee" (so both
    clusters look the same to the service)."""
    if isinstance(err, TransactionErrorInstructionError):
        inner = err.err
        detail: Any = (
            {"Custom": inner.code}
            if isinstance(inner, InstructionErrorCustom)
            else str(inner).rpartition(".")[2]
        )
        return {"InstructionError": [err.index, detail]}
    return str(err).rpartition(".")[2]


def record_slot_hash(svm: LiteSVM, slot: int, history: list[tuple[int, Hash]]) -> None:
    """Keep the SlotHashes sysvar as a validator does (newest first, the last 150 slots):
    LiteSVM leaves it alone, and creating a lookup table needs a recent slot in it."""
    history.insert(0, (slot, svm.latest_blockhash()))
    del history[150:]
    svm.set_slot_hashes(history)


class EmbeddedCluster:
    """LiteSVM as a cluster. Blocks advance with wall time (`block_ms` each); a transaction is
    processed when sent (and then final: there are no forks), unless its blockhash is unknown
    or expired, in which case it is dropped as a real cluster would drop it.

    `unavailable = True` makes every call raise ClusterUnavailableError (an outage, for
    tests); `drop_sends = n` drops the next n transactions silently (lost on the way).
    """

    name = "embedded"

    def __init__(self, program_so: bytes, *, block_ms: float = 400.0) -> None:
        self.svm = LiteSVM().with_mainnet_features().with_blockhash_check(False)
        self._block_ms = block_ms
        self._started = time.monotonic()
        self._height_offset = 0
        self._hashes: dict[Hash, int] = {}  # blockhash handed out -> last valid block height
        self._history: dict[Signature, SignatureState] = {}
        self.unavailable = False
        self.drop_sends = 0
        self.sent = 0
        self.processed = 0
        self.fees_lamports = 0
        deployer = Keypair()
        self.svm.airdrop(deployer.pubkey(), 100 * 10**9)
        try:
            self.program_id = deploy_upgradeable(self.svm, deployer, Keypair(), program_so)
        except DeployError as exc:
            raise LoaderError(str(exc)) from None
        self._height_offset = self.svm.get_clock().slot
        self._slot_hashes: list[tuple[int, Hash]] = []
        record_slot_hash(self.svm, self._height_offset, self._slot_hashes)
        clock = self.svm.get_clock()  # wall time from the first block (records' settled_at,
        clock.unix_timestamp = int(time.time())  # dispute deadlines), not the default epoch
        self.svm.set_clock(clock)

    # ---- the Cluster interface -------------------------------------------------------------

    async def latest_blockhash(self) -> Blockhash:
        self._check_up()
        height = self._advance()
        blockhash = self.svm.latest_blockhash()
        self._hashes[blockhash] = height + BLOCKHASH_LIFETIME_BLOCKS
        return Blockhash(blockhash, height + BLOCKHASH_LIFETIME_BLOCKS)

    async def block_height(self) -> int:
        self._check_up()
        return self._advance()

    async def slot(self) -> int:
        self._check_up()
        self._advance()
        return int(self.svm.get_clock().slot)

    async def send(self, transaction: VersionedTransaction) -> Signature:
        self._check_up()
        signature = transaction.signatures[0]
        height = self._advance()
        self.sent += 1
        if self.drop_sends > 0:
            self.drop_sends -= 1
            return signature
        if signature in self._history:
            return signature  # already processed: a re-send of the same bytes changes nothing
        last_valid = self._hashes.get(transaction.message.recent_blockhash)
        if last_valid is None or height > last_valid:
            return signature  # unknown or expired blockhash: dropped, never lands
        result = self.svm.send_transaction(transaction)
        slot = self.svm.get_clock().slot
        self.processed += 1
        if isinstance(result, FailedTransactionMetadata):
            self.fees_lamports += result.meta().fee()
            self._history[signature] = SignatureState(
                "finalized", _error_json(result.err()), slot
            )
        else:
            self.fees_lamports += result.fee()
            self._history[signature] = SignatureState("finalized", None, slot)
        return signature

    async def simulate(self, transaction: VersionedTransaction) -> tuple[object | None, int]:
        self._check_up()
        self._advance()
        result = self.svm.simulate_transaction(transaction)
        if isinstance(result, FailedTransactionMetadata):
            return _error_json(result.err()), result.meta().compute_units_consumed()
        return None, result.meta().compute_units_consumed()

    async def signature_states(self, signatures: Sequence[Signature]) -> list[SignatureState]:
        self._check_up()
        return [self._history.get(s, SignatureState(None)) for s in signatures]

    async def accounts_exist(self, addresses: Sequence[Pubkey]) -> list[bool]:
        self._check_up()
        return [self.svm.get_account(a) is not None for a in addresses]

    async def get_accounts(self, addresses: Sequence[Pubkey]) -> list[AccountInfo | None]:
        self._check_up()
        found: list[AccountInfo | None] = []
        for address in addresses:
            account = self.svm.get_account(address)
            found.append(None if account is None
                         else AccountInfo(account.owner, account.lamports, bytes(account.data)))
        return found

    async def token_balance(self, token_account: Pubkey) -> int:
        self._check_up()
        account = self.svm.get_account(token_account)
        if account is None or len(account.data) < 72:
            return 0
        return int(struct.unpack_from("<Q", bytes(account.data), 64)[0])

    async def priority_fee(self, writable: Sequence[Pubkey]) -> int:
        self._check_up()
        return 0  # nobody else competes for these accounts in the hub's own ledger

    async def close(self) -> None:
        """Nothing to release: the ledger goes with the process."""

    # ---- embedded only ---------------------------------------------------------------------

    async def airdrop(self, address: Pubkey, lamports: int) -> None:
        """Give an address SOL (the embedded ledger's faucet; site set-up uses it)."""
        self._check_up()
        self.svm.airdrop(address, lamports)

    def skip_blocks(self, blocks: int) -> None:
        """Move block height on by `blocks` (tests: let blockhashes expire without waiting)."""
        self._height_offset += blocks

    def account_data(self, address: Pubkey) -> bytes | None:
        """An account's data, or None (tests and `etp settle` read the ledger through it)."""
        account = self.svm.get_account(address)
        return None if account is None else bytes(account.data)

    # ---- internals -------------------------------------------------------------------------

    def _check_up(self) -> None:
        if self.unavailable:
            raise ClusterUnavailableError("the embedded ledger is unavailable (injected outage)")

    def _advance(self) -> int:
        """The block height now; the ledger's clock follows (slot = height, time = wall
        clock), so the program's Clock sysvar reads real time."""
        height = int((time.monotonic() - self._started) * 1000 / self._block_ms)
        height += self._height_offset
        clock = self.svm.get_clock()
        if height > clock.slot:
            self.svm.warp_to_slot(height)
            clock = self.svm.get_clock()
            clock.unix_timestamp = int(time.time())
            self.svm.set_clock(clock)
            self.svm.expire_blockhash()  # each block has its own hash
            record_slot_hash(self.svm, height, self._slot_hashes)
        return max(height, clock.slot)
