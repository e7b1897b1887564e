"""TEST DOUBLE, not a Solana node: a Solana JSON-RPC 2.0 endpoint over HTTP on 127.0.0.1,
answering the methods RpcCluster uses from an in-process LiteSVM (the real Solana VM), with
faults a real cluster shows injected on demand.

No validator can run on these machines, so RpcCluster is tested against this double. What is
real: HTTP, JSON-RPC framing, the methods' request and answer shapes, transaction execution
(LiteSVM). What is modelled here, simply: blocks (`advance_blocks`), blockhash lifetimes (150
blocks; a transaction whose blockhash is unknown or expired is accepted and never lands, as a
real leader drops it), commitment (confirmed once executed, finalized 32 blocks later), and
prioritization fees (a list the test sets).

Faults: answer the next K calls as a node N blocks behind (a load balancer's lagging node:
older context slot and block height, newer transactions not seen); refuse the next K requests
with an HTTP status (503, 429...); answer the next K with a JSON-RPC error; carry out the next
K requests but lose their answers (503 after the work is done); drop the next K sent
transactions (accepted, never executed); delay every answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from solders.hash import Hash
from solders.litesvm import LiteSVM
from solders.pubkey import Pubkey
from solders.signature import Signature
from solders.token import ID as TOKEN_PROGRAM_ID
from solders.transaction import VersionedTransaction
from solders.transaction_metadata import FailedTransactionMetadata, TransactionMetadata
from solders.transaction_status import (
    TransactionErrorInstructionError,
    TransactionErrorInsufficientFundsForRent,
)

from hub.settlement.embedded import record_slot_hash

__all__ = ["BLOCKHASH_LIFETIME_BLOCKS", "RpcDouble"]

BLOCKHASH_LIFETIME_BLOCKS = 150
FINALIZED_AFTER_BLOCKS = 32
TOKEN_2022_PROGRAM_ID = Pubkey.from_string("TokenzQdBNbLqP5VEhdkAS6EPFLC1PHnBqCXEpPxuEb")
TOKEN_PROGRAMS = {TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID}

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class _RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _Landed:
    slot: int
    block_height: int
    err: Any  # JSON form, as a node reports it


class RpcDouble:
    """The test double. `await start()` returns its URL; `await stop()` closes it.

    Counters for assertions: `http_requests` (every HTTP request that reached it),
    `calls[method]` (JSON-RPC calls, including refused ones), `executed` (transactions run on
    the SVM), `fee_requests` (the address lists getRecentPrioritizationFees received).
    """

    def __init__(self, svm: LiteSVM | None = None, *, slot_offset: int = 7) -> None:
        # The double checks blockhash ages itself (LiteSVM accepts only its latest hash).
        self.svm = (svm or LiteSVM()).with_blockhash_check(False)
        self.block_height = 0
        self._slot_offset = slot_offset  # slots skipped before block 0, so slot != height
        self.svm.warp_to_slot(self.slot)
        self._slot_hashes: list[tuple[int, Hash]] = []
        self._blockhash_last_valid: dict[Hash, int] = {}
        self._register_current_blockhash()
        self.landed: dict[Signature, _Landed] = {}
        self.prioritization_fees: list[tuple[int, int]] = []  # (slot, micro-lamports)
        # Faults.
        self._refuse: list[int] = []  # HTTP statuses for the next requests
        self._rpc_errors: list[tuple[int, str]] = []
        self._lose_answers = 0
        self._drop_sends = 0
        self._lags: list[int] = []  # blocks behind, for the next calls
        self._lag = 0  # of the call being answered
        self.delay_s = 0.0
        # Counters.
        self.http_requests = 0
        self.calls: Counter[str] = Counter()
        self.executed = 0
        self.dropped: list[Signature] = []
        self.fee_requests: list[list[str]] = []
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()
        self.url = ""

    # -- chain model --------------------------------------------------------------------

    @property
    def slot(self) -> int:
        return self.block_height + self._slot_offset

    @property
    def _view_height(self) -> int:
        """The block height of the node answering the current call (lower if it lags)."""
        return max(0, self.block_height - self._lag)

    def _register_current_blockhash(self) -> None:
        blockhash = self.svm.latest_blockhash()
        self._blockhash_last_valid.setdefault(
            blockhash, self.block_height + BLOCKHASH_LIFETIME_BLOCKS
        )

    def advance_blocks(self, count: int) -> None:
        """Produce `count` blocks: block height and slot move on, a new blockhash is issued
        (older ones stay valid for 150 blocks from their own)."""
        self.block_height += count
        self.svm.warp_to_slot(self.slot)
        self.svm.expire_blockhash()
        record_slot_hash(self.svm, self.slot, self._slot_hashes)
        self._register_current_blockhash()

    def _blockhash_valid(self, blockhash: Hash) -> bool:
        last_valid = self._blockhash_last_valid.get(blockhash)
        return last_valid is not None and self.block_height <= last_valid

    # -- faults -------------------------------------------------------------------------

    def refuse_next(self, count: int, status: int = 503) -> None:
        """Answer the next `count` HTTP requests with `status`, doing nothing."""
        self._refuse.extend([status] * count)

    def rpc_error_next(self, count: int, code: int, message: str) -> None:
        """Answer the next `count` JSON-RPC calls with this error, doing nothing."""
        self._rpc_errors.extend([(code, message)] * count)

    def lose_answers_next(self, count: int) -> None:
        """Carry out the next `count` calls, then answer 503 (the answer is lost)."""
        self._lose_answers += count

    def lag_next(self, count: int, blocks: int) -> None:
        """Answer the next `count` calls as a node `blocks` blocks behind."""
        self._lags.extend([blocks] * count)

    def drop_next_sends(self, count: int) -> None:
        """Accept the next `count` sendTransaction calls (answer the signature) and never
        execute those transactions."""
        self._drop_sends += count

    # -- server -------------------------------------------------------------------------

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve_connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._connections):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> RpcDouble:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._connections.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in header_lines:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, payload = await self._handle_http(request_line, body)
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                reason = _REASONS.get(status, "Unknown")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode("latin-1")
                    + payload
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle_http(self, request_line: str, body: bytes) -> tuple[int, bytes]:
        self.http_requests += 1
        if not request_line.startswith("POST "):
            return 405, b'{"error":"POST only"}'
        try:
            request = json.loads(body)
            method = request["method"]
            params = request.get("params", [])
            request_id = request.get("id")
        except (ValueError, KeyError, TypeError):
            error = {"code": -32700, "message": "Parse error"}
            return 200, json.dumps({"jsonrpc": "2.0", "error": error, "id": None}).encode()
        self.calls[method] += 1
        if self._refuse:
            return self._refuse.pop(0), b'{"error":"unavailable"}'
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id}
        if self._rpc_errors:
            code, message = self._rpc_errors.pop(0)
            answer["error"] = {"code": code, "message": message}
        else:
            self._lag = self._lags.pop(0) if self._lags else 0
            try:
                answer["result"] = self._dispatch(method, params)
            except _RpcError as exc:
                answer["error"] = {"code": exc.code, "message": exc.message}
            finally:
                self._lag = 0
        if self._lose_answers:
            self._lose_answers -= 1
            return 503, b'{"error":"answer lost"}'
        return 200, json.dumps(answer).encode()

    # -- methods ------------------------------------------------------------------------

    def _context(self) -> dict[str, Any]:
        return {"slot": self._view_height + self._slot_offset, "apiVersion": "double"}

    def _dispatch(self, method: str, params: list[Any]) -> Any:
        handler = {
            "getLatestBlockhash": self._get_latest_blockhash,
            "getBlockHeight": self._get_block_height,
            "getEpochInfo": self._get_epoch_info,
            "sendTransaction": self._send_transaction,
            "simulateTransaction": self._simulate_transaction,
            "getSignatureStatuses": self._get_signature_statuses,
            "getMultipleAccounts": self._get_multiple_accounts,
            "getTokenAccountBalance": self._get_token_account_balance,
            "getRecentPrioritizationFees": self._get_recent_prioritization_fees,
        }.get(method)
        if handler is None:
            raise _RpcError(-32601, "Method not found")
        return handler(params)

    def _get_latest_blockhash(self, params: list[Any]) -> Any:
        blockhash = self.svm.latest_blockhash()
        return {
            "context": self._context(),
            "value": {
                "blockhash": str(blockhash),
                "lastValidBlockHeight": self._blockhash_last_valid[blockhash],
            },
        }

    def _get_block_height(self, params: list[Any]) -> Any:
        return self._view_height

    def _get_epoch_info(self, params: list[Any]) -> Any:
        slot = self._view_height + self._slot_offset
        return {
            "absoluteSlot": slot,
            "blockHeight": self._view_height,
            "epoch": 0,
            "slotIndex": slot,
            "slotsInEpoch": 432_000,
            "transactionCount": self.executed,
        }

    @staticmethod
    def _decode_transaction(params: list[Any]) -> VersionedTransaction:
        try:
            encoding = (params[1] if len(params) > 1 else {}).get("encoding", "base58")
            if encoding != "base64":
                raise ValueError("the double only decodes base64")
            return VersionedTransaction.from_bytes(base64.b64decode(params[0]))
        except Exception as exc:
            raise _RpcError(-32602, f"invalid transaction: {exc}") from None

    @staticmethod
    def _error_json(result: FailedTransactionMetadata) -> Any:
        return json.loads(result.to_json())["err"]

    def _send_transaction(self, params: list[Any]) -> Any:
        transaction = self._decode_transaction(params)
        signature = transaction.signatures[0]
        if self._drop_sends:
            self._drop_sends -= 1
            self.dropped.append(signature)
            return str(signature)
        if signature in self.landed:
            return str(signature)  # a duplicate: the cluster ignores it
        if not self._blockhash_valid(transaction.message.recent_blockhash):
            self.dropped.append(signature)  # a leader drops it; the sender learns nothing
            return str(signature)
        self.executed += 1
        result = self.svm.send_transaction(transaction)
        if isinstance(result, TransactionMetadata):
            self.landed[signature] = _Landed(self.slot, self.block_height, None)
        elif isinstance(
            result.err(),
            TransactionErrorInstructionError | TransactionErrorInsufficientFundsForRent,
        ):
            # Failed in execution: it lands (the fee is paid) with its error.
            self.landed[signature] = _Landed(self.slot, self.block_height, self._error_json(result))
        else:
            self.dropped.append(signature)  # refused before execution: never lands
        return str(signature)

    def _simulate_transaction(self, params: list[Any]) -> Any:
        transaction = self._decode_transaction(params)
        if not self._blockhash_valid(transaction.message.recent_blockhash):
            value = {"err": "BlockhashNotFound", "logs": [], "unitsConsumed": 0}
            return {"context": self._context(), "value": value}
        result = self.svm.simulate_transaction(transaction)
        meta = result.meta()
        err = self._error_json(result) if isinstance(result, FailedTransactionMetadata) else None
        value = {
            "err": err,
            "logs": list(meta.logs()),
            "unitsConsumed": meta.compute_units_consumed(),
            "accounts": None,
            "returnData": None,
        }
        return {"context": self._context(), "value": value}

    def _get_signature_statuses(self, params: list[Any]) -> Any:
        signatures = params[0]
        if len(signatures) > 256:
            raise _RpcError(-32602, "Too many inputs provided; max 256")
        values: list[Any] = []
        for text in signatures:
            landed = self.landed.get(Signature.from_string(text))
            if landed is None or landed.block_height > self._view_height:
                values.append(None)
                continue
            depth = self._view_height - landed.block_height
            finalized = depth >= FINALIZED_AFTER_BLOCKS
            values.append(
                {
                    "slot": landed.slot,
                    "confirmations": None if finalized else depth,
                    "err": landed.err,
                    "status": {"Ok": None} if landed.err is None else {"Err": landed.err},
                    "confirmationStatus": "finalized" if finalized else "confirmed",
                }
            )
        return {"context": self._context(), "value": values}

    def _get_multiple_accounts(self, params: list[Any]) -> Any:
        addresses = params[0]
        if len(addresses) > 100:
            raise _RpcError(-32602, "Too many inputs provided; max 100")
        options = params[1] if len(params) > 1 else {}
        data_slice = options.get("dataSlice")
        values: list[Any] = []
        for text in addresses:
            account = self.svm.get_account(Pubkey.from_string(text))
            if account is None or (account.lamports == 0 and not account.data):
                values.append(None)
                continue
            data = bytes(account.data)
            if data_slice is not None:
                start = data_slice["offset"]
                data = data[start : start + data_slice["length"]]
            values.append(
                {
                    "data": [base64.b64encode(data).decode(), "base64"],
                    "executable": account.executable,
                    "lamports": account.lamports,
                    "owner": str(account.owner),
                    "rentEpoch": account.rent_epoch,
                    "space": len(account.data),
                }
            )
        return {"context": self._context(), "value": values}

    def _get_token_account_balance(self, params: list[Any]) -> Any:
        account = self.svm.get_account(Pubkey.from_string(params[0]))
        if account is None or (account.lamports == 0 and not account.data):
            raise _RpcError(-32602, "Invalid param: could not find account")
        if account.owner not in TOKEN_PROGRAMS or len(account.data) < 72:
            raise _RpcError(-32602, "Invalid param: not a Token account")
        data = bytes(account.data)
        mint = self.svm.get_account(Pubkey.from_bytes(data[0:32]))
        if mint is None:
            raise _RpcError(-32602, "Invalid param: could not find mint")
        decimals = bytes(mint.data)[44]
        amount = int.from_bytes(data[64:72], "little")
        ui_amount = amount / 10**decimals
        return {
            "context": self._context(),
            "value": {
                "amount": str(amount),
                "decimals": decimals,
                "uiAmount": ui_amount,
                "uiAmountString": f"{ui_amount:.{decimals}f}" if decimals else str(amount),
            },
        }

    def _get_recent_prioritization_fees(self, params: list[Any]) -> Any:
        addresses = params[0] if params else []
        if len(addresses) > 128:
            raise _RpcError(-32602, "Too many inputs provided; max 128")
        self.fee_requests.append(list(addresses))
        return [{"slot": slot, "prioritizationFee": fee} for slot, fee in self.prioritization_fees]
