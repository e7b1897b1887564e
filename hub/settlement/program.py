"""The etp_settlement program's client, driven by its Anchor 0.30 IDL alone (the hub's copy of
what anchor/tools uses: instruction building, PDAs, account and event decoding).

It does what any Anchor client does with an IDL: instruction data = discriminator + Borsh
arguments, accounts by the names the IDL lists, account and event decoding by
discriminator. Nothing here is shared with the Rust code except the IDL file, so the tests
that use this client check the program against its published interface.
"""

from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from solders.instruction import AccountMeta, Instruction
from solders.pubkey import Pubkey

__all__ = [
    "IDL_PATH",
    "PROGRAM_SO_PATH",
    "Idl",
    "IdlError",
    "ProgramMissingError",
    "TradeInput",
    "load_idl",
    "read_program",
]

# The repository next to the hub package (as Settings.dashboard_path): the IDL is committed,
# the program is built there by scripts/setup.sh (anchor/build.py).
_ANCHOR_DIR = Path(__file__).resolve().parents[2] / "anchor"
IDL_PATH = _ANCHOR_DIR / "idl" / "etp_settlement.json"
PROGRAM_SO_PATH = _ANCHOR_DIR / "target" / "etp_settlement.so"

_SCALARS = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q", "i64": "<q", "bool": "<?"}


class IdlError(Exception):
    """Arguments or accounts do not match the IDL."""


class ProgramMissingError(RuntimeError):
    """The built program (or its IDL) is not where the hub looks for it."""


@dataclass(frozen=True)
class TradeInput:
    """One trade for settle_trades (price in token base units per kWh, energy in Wh)."""

    auction_id: int
    trade_id: int
    device_id: int
    price_per_kwh: int
    energy_wh: int
    evidence_hash: bytes

    def as_args(self) -> dict[str, Any]:
        return {
            "auction_id": self.auction_id,
            "trade_id": self.trade_id,
            "device_id": self.device_id,
            "price_per_kwh": self.price_per_kwh,
            "energy_wh": self.energy_wh,
            "evidence_hash": list(self.evidence_hash),
        }


class Idl:
    """Encoder/decoder for one program's IDL."""

    def __init__(self, document: dict[str, Any], program_id: Pubkey | None = None) -> None:
        self.document = document
        self.program_id = program_id or Pubkey.from_string(document["address"])
        self.instructions = {ix["name"]: ix for ix in document["instructions"]}
        self.types = {t["name"]: t["type"] for t in document["types"]}
        self.account_by_disc = {bytes(a["discriminator"]): a["name"] for a in document["accounts"]}
        self.event_by_disc = {bytes(e["discriminator"]): e["name"] for e in document["events"]}
        self.errors = {e["code"]: e["name"] for e in document["errors"]}
        self.error_codes = {e["name"]: e["code"] for e in document["errors"]}

    # --- Borsh
    def encode(self, kind: Any, value: Any) -> bytes:
        if isinstance(kind, str):
            if kind == "pubkey":
                return bytes(value)
            return struct.pack(_SCALARS[kind], value)
        if "array" in kind:
            elem, length = kind["array"]
            if len(value) != length:
                raise IdlError(f"array of {length} expected, got {len(value)}")
            if elem == "u8":
                return bytes(value)
            return b"".join(self.encode(elem, v) for v in value)
        if "vec" in kind:
            return struct.pack("<I", len(value)) + b"".join(
                self.encode(kind["vec"], v) for v in value
            )
        if "defined" in kind:
            fields = self.types[kind["defined"]["name"]]["fields"]
            return b"".join(self.encode(f["type"], value[f["name"]]) for f in fields)
        raise IdlError(f"unsupported type {kind}")

    def decode(self, kind: Any, data: bytes, offset: int) -> tuple[Any, int]:
        if isinstance(kind, str):
            if kind == "pubkey":
                return Pubkey.from_bytes(data[offset : offset + 32]), offset + 32
            fmt = _SCALARS[kind]
            return struct.unpack_from(fmt, data, offset)[0], offset + struct.calcsize(fmt)
        if "array" in kind:
            elem, length = kind["array"]
            if elem == "u8":
                return bytes(data[offset : offset + length]), offset + length
            values = []
            for _ in range(length):
                value, offset = self.decode(elem, data, offset)
                values.append(value)
            return values, offset
        if "defined" in kind:
            return self.decode_struct(kind["defined"]["name"], data, offset)
        raise IdlError(f"unsupported type {kind}")

    def decode_struct(self, name: str, data: bytes, offset: int = 0) -> tuple[dict[str, Any], int]:
        out = {}
        for field in self.types[name]["fields"]:
            out[field["name"]], offset = self.decode(field["type"], data, offset)
        return out, offset

    # --- instructions, accounts, events
    def instruction(
        self,
        name: str,
        accounts: dict[str, Pubkey],
        args: dict[str, Any] | None = None,
        remaining: list[AccountMeta] | None = None,
    ) -> Instruction:
        """An instruction with the IDL's account order and flags; `remaining` appended."""
        spec = self.instructions[name]
        args = args or {}
        data = bytes(spec["discriminator"])
        for arg in spec["args"]:
            if arg["name"] not in args:
                raise IdlError(f"{name}: missing argument {arg['name']}")
            data += self.encode(arg["type"], args[arg["name"]])
        metas = []
        for account in spec["accounts"]:
            key = accounts.get(account["name"])
            if key is None and "address" in account:
                key = Pubkey.from_string(account["address"])
            if key is None:
                raise IdlError(f"{name}: missing account {account['name']}")
            metas.append(
                AccountMeta(key, bool(account.get("signer")), bool(account.get("writable")))
            )
        return Instruction(self.program_id, data, metas + list(remaining or []))

    def decode_account(self, data: bytes) -> tuple[str, dict[str, Any]]:
        name = self.account_by_disc.get(bytes(data[:8]))
        if name is None:
            raise IdlError("unknown account discriminator")
        fields, _ = self.decode_struct(name, data, 8)
        return name, fields

    def events(self, logs: list[str]) -> list[tuple[str, dict[str, Any]]]:
        """Events in a transaction's logs (`Program data: <base64>` lines)."""
        found = []
        for line in logs:
            if not line.startswith("Program data: "):
                continue
            raw = base64.b64decode(line.split(": ", 1)[1])
            name = self.event_by_disc.get(raw[:8])
            if name is not None:
                found.append((name, self.decode_struct(name, raw, 8)[0]))
        return found

    # --- addresses
    def pda(self, *seeds: bytes) -> Pubkey:
        return Pubkey.find_program_address(list(seeds), self.program_id)[0]

    def market_address(self, authority: Pubkey) -> Pubkey:
        return self.pda(b"market", bytes(authority))

    def reputation_address(self, market: Pubkey, owner: Pubkey) -> Pubkey:
        return self.pda(b"reputation", bytes(market), bytes(owner))

    def escrow_address(self, market: Pubkey, aggregator: Pubkey) -> Pubkey:
        return self.pda(b"escrow", bytes(market), bytes(aggregator))

    def vault_address(self, market: Pubkey, aggregator: Pubkey) -> Pubkey:
        return self.pda(b"vault", bytes(market), bytes(aggregator))

    def trade_record_address(self, market: Pubkey, auction_id: int, trade_id: int) -> Pubkey:
        return self.pda(
            b"trade", bytes(market), struct.pack("<Q", auction_id), struct.pack("<Q", trade_id)
        )


def load_idl(program_id: Pubkey | None = None, path: Path = IDL_PATH) -> Idl:
    """The committed IDL; `program_id` overrides its address (e.g. a test deployment)."""
    return Idl(json.loads(path.read_text()), program_id)


def read_program(path: Path | None = None) -> bytes:
    """The built program's bytes (anchor/target/etp_settlement.so unless `path`)."""
    path = path or PROGRAM_SO_PATH
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProgramMissingError(
            f"the settlement program is not built: {path} is missing; run bash scripts/setup.sh "
            "(or python anchor/build.py)"
        ) from None
