"""A Solana cluster reached over JSON-RPC 2.0 (localnet, devnet, mainnet): the Cluster the
settlement service uses when the ledger is not the embedded LiteSVM."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import httpx
from solders.hash import Hash
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.transaction import VersionedTransaction

from hub.settlement.cluster import AccountInfo, Blockhash, ClusterUnavailableError, SignatureState

__all__ = [
    "MAX_ACCOUNTS_PER_CALL",
    "MAX_FEE_ACCOUNTS_PER_CALL",
    "MAX_SIGNATURES_PER_CALL",
    "RpcCluster",
    "RpcRequestError",
    "safe_endpoint",
]

log = logging.getLogger("hub.settlement.rpc")

# Limits a Solana RPC node enforces per call (larger requests are refused with -32602).
MAX_ACCOUNTS_PER_CALL = 100  # getMultipleAccounts
MAX_SIGNATURES_PER_CALL = 256  # getSignatureStatuses
MAX_FEE_ACCOUNTS_PER_CALL = 128  # getRecentPrioritizationFees

# JSON-RPC error codes that say "this node cannot answer now", not "your request is wrong":
# the node is unhealthy or behind, a block/status is not available yet, a minimum context slot
# is not reached, long-term storage is unreachable, an internal error, or a provider's rate
# limit reported in the body (some providers answer HTTP 200 with code 429 / -32429).
_UNAVAILABLE_CODES = frozenset({-32603, -32004, -32005, -32014, -32016, -32019, 429, -32429})

_COMMITMENT = "confirmed"


class RpcRequestError(Exception):
    """The node answered, but refused the request itself (bad parameters, unknown method,
    unsupported transaction version, ...): retrying the same request will not help."""

    def __init__(self, method: str, code: int, message: str) -> None:
        super().__init__(f"{method} refused by the RPC node: {message} (code {code})")
        self.method = method
        self.code = code
        self.node_message = message


def safe_endpoint(url: str) -> str:
    """The part of an RPC URL that is safe to log: scheme, host and port. Providers put API
    keys in the path or the query string, so neither is ever shown."""
    try:
        parsed = httpx.URL(url)
    except Exception:
        return "<invalid RPC URL>"
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


class _RedactHttpxUrls(logging.Filter):
    """httpx logs every request with its full URL at INFO: keep only scheme and host."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, httpx.URL) for arg in record.args
        ):
            record.args = tuple(
                safe_endpoint(str(arg)) if isinstance(arg, httpx.URL) else arg
                for arg in record.args
            )
        return True


def _install_httpx_redaction() -> None:
    httpx_log = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactHttpxUrls) for f in httpx_log.filters):
        httpx_log.addFilter(_RedactHttpxUrls())


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _percentile(values: Sequence[int], percentile: float) -> int:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


class RpcCluster:
    """The Cluster protocol over a Solana JSON-RPC endpoint (httpx, async).

    Every call has a deadline (`timeout_s`). A node that cannot be reached, times out, answers
    HTTP 429/5xx, answers something that is not a JSON-RPC response, or reports itself
    unhealthy/behind raises ClusterUnavailableError; a request the node refuses raises
    RpcRequestError naming the method and the node's message. Nothing is retried here: the
    settlement service decides (and a CircuitBreaker can stop calls to a failing node).

    `url` may carry an API key: only its scheme and host are ever logged or put in errors.
    """

    def __init__(
        self,
        url: str,
        *,
        name: str = "localnet",
        timeout_s: float = 10.0,
        fee_percentile: float = 90.0,
        max_priority_fee_micro_lamports: int | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        try:
            parsed = httpx.URL(url)
        except Exception:
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            # The URL itself is not shown: it may hold an API key.
            raise ValueError("the RPC URL must be http(s)://host[:port][/path]")
        if not 0 < fee_percentile <= 100:
            raise ValueError(f"fee_percentile must be in (0, 100], got {fee_percentile}")
        self.name = name
        self.endpoint = safe_endpoint(url)
        self._url = url
        self._timeout_s = timeout_s
        self._fee_percentile = fee_percentile
        self._max_priority_fee = max_priority_fee_micro_lamports
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))
        self._ids = itertools.count(1)
        # The highest confirmed slot any answer has shown. Behind a load balancer consecutive
        # calls may reach different nodes; an answer from a node older than what was already
        # seen is refused (ClusterUnavailableError), never believed: "not landed" from a
        # lagging node after "blockhash expired" from a fresh one would invite a double payment.
        self.seen_slot = 0
        _install_httpx_redaction()

    def __repr__(self) -> str:
        return f"RpcCluster(name={self.name!r}, endpoint={self.endpoint!r})"

    # -- transport ----------------------------------------------------------------------

    async def _call(self, method: str, params: list[Any]) -> Any:
        """One JSON-RPC request; returns its `result` or raises (see the class docstring)."""
        request_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        try:
            async with asyncio.timeout(self._timeout_s):
                response = await self._client.post(self._url, json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise self._unavailable(method, f"no answer within {self._timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            # The message of a transport error names the socket, not the URL; the type and
            # message are enough to act on. (Not chained: keep the URL out of tracebacks.)
            raise self._unavailable(method, f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if status == 429 or status == 408 or status >= 500:
            raise self._unavailable(method, f"HTTP {status}")
        if status >= 400:
            raise RpcRequestError(method, status, f"HTTP {status} from {self.endpoint}")
        try:
            answer = response.json()
        except ValueError:
            raise self._unavailable(method, "the answer is not JSON") from None
        if not isinstance(answer, dict) or answer.get("id") != request_id:
            raise self._unavailable(method, "the answer is not a response to this request")
        error = answer.get("error")
        if error is not None:
            code, message = self._error_fields(error)
            if code in _UNAVAILABLE_CODES:
                raise self._unavailable(method, f"{message} (code {code})")
            raise RpcRequestError(method, code, message)
        if "result" not in answer:
            raise self._unavailable(method, "the answer has neither result nor error")
        return answer["result"]

    @staticmethod
    def _error_fields(error: object) -> tuple[int, str]:
        if isinstance(error, dict):
            code = error.get("code")
            message = error.get("message")
            return (
                code if isinstance(code, int) else 0,
                message if isinstance(message, str) else repr(error),
            )
        return 0, repr(error)

    def _unavailable(self, method: str, reason: str) -> ClusterUnavailableError:
        log.warning("solana rpc %s at %s unavailable: %s", method, self.endpoint, reason)
        return ClusterUnavailableError(f"{method} at {self.endpoint}: {reason}")

    def _malformed(self, method: str, exc: Exception) -> ClusterUnavailableError:
        return self._unavailable(method, f"malformed result ({type(exc).__name__}: {exc})")

    def _observe_slot(self, method: str, slot: object, *, confirmed: bool) -> None:
        """Refuse an answer from a node behind a slot already seen; remember confirmed slots."""
        if not isinstance(slot, int):
            raise self._malformed(method, TypeError(f"context slot {slot!r}"))
        if slot < self.seen_slot:
            raise self._unavailable(
                method, f"node is behind: answered at slot {slot}, slot {self.seen_slot} seen"
            )
        if confirmed:
            self.seen_slot = slot

    def _context_slot(self, method: str, result: Any) -> object:
        try:
            return result["context"]["slot"]
        except (KeyError, TypeError) as exc:
            raise self._malformed(method, exc) from None

    # -- Cluster ------------------------------------------------------------------------

    async def latest_blockhash(self) -> Blockhash:
        """A blockhash to sign with (commitment confirmed) and its last valid block height."""
        method = "getLatestBlockhash"
        result = await self._call(method, [{"commitment": _COMMITMENT}])
        self._observe_slot(method, self._context_slot(method, result), confirmed=True)
        try:
            value = result["value"]
            return Blockhash(
                blockhash=Hash.from_string(value["blockhash"]),
                last_valid_block_height=int(value["lastValidBlockHeight"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(method, exc) from None

    async def block_height(self) -> int:
        """The current block height (commitment confirmed). Asked with getEpochInfo rather
        than getBlockHeight: it also gives the slot, so that a later "not landed" from a node
        behind this one is refused (see `seen_slot`)."""
        return (await self._epoch_info())[1]

    async def slot(self) -> int:
        """The current slot (commitment confirmed), from getEpochInfo as block_height."""
        return (await self._epoch_info())[0]

    async def _epoch_info(self) -> tuple[int, int]:
        method = "getEpochInfo"
        result = await self._call(method, [{"commitment": _COMMITMENT}])
        try:
            slot, height = result["absoluteSlot"], result["blockHeight"]
        except (KeyError, TypeError) as exc:
            raise self._malformed(method, exc) from None
        self._observe_slot(method, slot, confirmed=True)
        if not isinstance(height, int) or not isinstance(slot, int):
            raise self._malformed(method, TypeError(f"blockHeight {height!r}, slot {slot!r}"))
        return slot, height

    async def send(self, transaction: VersionedTransaction) -> Signature:
        """Send a signed transaction once (no preflight, no node-side retries: the service
        simulates first and decides on re-sends). Returns its signature."""
        method = "sendTransaction"
        encoded = base64.b64encode(bytes(transaction)).decode("ascii")
        options = {"encoding": "base64", "skipPreflight": True, "maxRetries": 0}
        result = await self._call(method, [encoded, options])
        expected = transaction.signatures[0]
        try:
            returned = Signature.from_string(result)
        except (TypeError, ValueError) as exc:
            raise self._malformed(method, exc) from None
        if returned != expected:
            raise self._malformed(method, ValueError(f"signature {returned} is not {expected}"))
        return expected

    async def simulate(self, transaction: VersionedTransaction) -> tuple[object | None, int]:
        """(error as the node reports it, or None; compute units consumed)."""
        method = "simulateTransaction"
        encoded = base64.b64encode(bytes(transaction)).decode("ascii")
        options = {"encoding": "base64", "commitment": _COMMITMENT}
        result = await self._call(method, [encoded, options])
        self._observe_slot(method, self._context_slot(method, result), confirmed=True)
        try:
            value = result["value"]
            units = value.get("unitsConsumed")
            return value.get("err"), int(units) if units is not None else 0
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._malformed(method, exc) from None

    async def signature_states(self, signatures: Sequence[Signature]) -> list[SignatureState]:
        """The state of each signature, in order, searching the node's transaction history."""
        method = "getSignatureStatuses"
        states: list[SignatureState] = []
        for chunk in _chunks(signatures, MAX_SIGNATURES_PER_CALL):
            params = [[str(s) for s in chunk], {"searchTransactionHistory": True}]
            result = await self._call(method, params)
            # Answered from the node's processed bank: at or past any confirmed slot seen.
            self._observe_slot(method, self._context_slot(method, result), confirmed=False)
            try:
                values = result["value"]
                if len(values) != len(chunk):
                    raise ValueError(f"{len(values)} statuses for {len(chunk)} signatures")
                states.extend(self._signature_state(v) for v in values)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._malformed(method, exc) from None
        return states

    @staticmethod
    def _signature_state(value: Any) -> SignatureState:
        if value is None:
            return SignatureState(confirmation=None)
        confirmation = value.get("confirmationStatus")
        if confirmation not in ("processed", "confirmed", "finalized"):
            # Old nodes report only `confirmations` (null once rooted).
            confirmation = "finalized" if value.get("confirmations") is None else "processed"
        slot = value.get("slot")
        return SignatureState(
            confirmation=confirmation,
            err=value.get("err"),
            slot=int(slot) if slot is not None else None,
        )

    async def accounts_exist(self, addresses: Sequence[Pubkey]) -> list[bool]:
        """Whether each account exists, asking for no account data (chunks of 100)."""
        found = await self._multiple_accounts(addresses, with_data=False)
        return [account is not None for account in found]

    async def get_accounts(self, addresses: Sequence[Pubkey]) -> list[AccountInfo | None]:
        """Each account with its data, None where none exists (chunks of 100)."""
        return await self._multiple_accounts(addresses, with_data=True)

    async def _multiple_accounts(self, addresses: Sequence[Pubkey], *, with_data: bool
                                 ) -> list[AccountInfo | None]:
        method = "getMultipleAccounts"
        found: list[AccountInfo | None] = []
        for chunk in _chunks(addresses, MAX_ACCOUNTS_PER_CALL):
            options: dict[str, Any] = {"commitment": _COMMITMENT, "encoding": "base64"}
            if not with_data:
                options["dataSlice"] = {"offset": 0, "length": 0}
            result = await self._call(method, [[str(a) for a in chunk], options])
            self._observe_slot(method, self._context_slot(method, result), confirmed=True)
            try:
                values = result["value"]
                if len(values) != len(chunk):
                    raise ValueError(f"{len(values)} accounts for {len(chunk)} addresses")
                for value in values:
                    if value is None:
                        found.append(None)
                        continue
                    data = base64.b64decode(value["data"][0]) if with_data else b""
                    found.append(AccountInfo(Pubkey.from_string(value["owner"]),
                                             int(value["lamports"]), data))
            except (KeyError, TypeError, ValueError, IndexError) as exc:
                raise self._malformed(method, exc) from None
        return found

    async def token_balance(self, token_account: Pubkey) -> int:
        """The balance of a token account in base units; 0 if the account does not exist."""
        method = "getTokenAccountBalance"
        try:
            result = await self._call(method, [str(token_account), {"commitment": _COMMITMENT}])
        except RpcRequestError as exc:
            # Nodes refuse a missing account with "invalid params" (-32602); ask whether it
            # exists rather than trusting the wording of the message.
            if exc.code == -32602 and not (await self.accounts_exist([token_account]))[0]:
                return 0
            raise
        self._observe_slot(method, self._context_slot(method, result), confirmed=True)
        try:
            return int(result["value"]["amount"])
        except (KeyError, TypeError, ValueError) as exc:
            raise self._malformed(method, exc) from None

    async def priority_fee(self, writable: Sequence[Pubkey]) -> int:
        """A compute-unit price (micro-lamports): the `fee_percentile` of the non-zero fees
        recently paid by transactions write-locking these accounts; 0 if none paid any."""
        method = "getRecentPrioritizationFees"
        by_slot: dict[int, int] = {}
        # Up to 128 addresses per call; per slot the node reports the fee needed to lock all
        # of them, so over several chunks the highest per slot is the one that counts.
        for chunk in _chunks(writable, MAX_FEE_ACCOUNTS_PER_CALL) or [[]]:
            params: list[Any] = [[str(a) for a in chunk]] if chunk else []
            result = await self._call(method, params)
            try:
                for entry in result:
                    slot = int(entry["slot"])
                    fee = int(entry["prioritizationFee"])
                    by_slot[slot] = max(fee, by_slot.get(slot, 0))
            except (KeyError, TypeError, ValueError) as exc:
                raise self._malformed(method, exc) from None
        paid = [fee for fee in by_slot.values() if fee > 0]
        if not paid:
            return 0
        fee = _percentile(paid, self._fee_percentile)
        if self._max_priority_fee is not None:
            fee = min(fee, self._max_priority_fee)
        return fee

    async def close(self) -> None:
        """Close the HTTP connections (only if this object opened them)."""
        if self._owns_client:
            await self._client.aclose()
