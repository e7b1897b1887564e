"""Generates the Anchor 0.30 IDL and the program's Rust interface constants from one spec.

    python anchor/tools/gen_interface.py          # write both files
    python anchor/tools/gen_interface.py --check  # exit 1 if either committed file is stale

Inputs: anchor/tools/interface_spec.py and the program keypair (for the IDL's address).
Outputs: anchor/idl/etp_settlement.json, anchor/programs/etp_settlement/src/interface.rs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

TOOLS_DIR = Path(__file__).resolve().parent
ANCHOR_DIR = TOOLS_DIR.parent
REPO_DIR = ANCHOR_DIR.parent
sys.path.insert(0, str(TOOLS_DIR))

import interface_spec as spec  # noqa: E402

IDL_PATH = ANCHOR_DIR / "idl" / f"{spec.PROGRAM_NAME}.json"
RUST_PATH = ANCHOR_DIR / "programs" / spec.PROGRAM_NAME / "src" / "interface.rs"

SCALAR_SIZES = {"pubkey": 32, "u8": 1, "bool": 1, "u16": 2, "u32": 4, "u64": 8, "i64": 8}


def discriminator(namespace: str, name: str) -> bytes:
    """Anchor's discriminator: the first 8 bytes of sha256("<namespace>:<name>")."""
    return hashlib.sha256(f"{namespace}:{name}".encode()).digest()[:8]


def field_size(kind: object) -> int:
    if isinstance(kind, str):
        return SCALAR_SIZES[kind]
    if isinstance(kind, tuple) and kind[0] == "array":
        return field_size(kind[1]) * int(kind[2])  # type: ignore[arg-type]
    if isinstance(kind, tuple) and kind[0] == "defined":
        return layout(spec.TYPES[str(kind[1])], start=0)[1]
    raise ValueError(f"field type {kind!r} has no fixed size")


def field_alignment(kind: object) -> int:
    if isinstance(kind, str):
        return min(SCALAR_SIZES[kind], 8)
    if isinstance(kind, tuple) and kind[0] == "array":
        return field_alignment(kind[1])
    return 1


def layout(fields: list[tuple[str, object]], start: int) -> tuple[list[tuple[str, int, int]], int]:
    """(name, offset, size) of each packed field, and the total size."""
    offset = start
    rows = []
    for name, kind in fields:
        size = field_size(kind)
        rows.append((name, offset, size))
        offset += size
    return rows, offset


def idl_type(kind: object) -> Any:
    if isinstance(kind, str):
        return kind
    assert isinstance(kind, tuple)
    if kind[0] == "array":
        return {"array": [idl_type(kind[1]), kind[2]]}
    if kind[0] == "vec":
        return {"vec": idl_type(kind[1])}
    if kind[0] == "defined":
        return {"defined": {"name": kind[1]}}
    raise ValueError(kind)


def program_address() -> str:
    from solders.keypair import Keypair

    secret = json.loads((REPO_DIR / spec.KEYPAIR_FILE).read_text())
    return str(Keypair.from_bytes(bytes(secret)).pubkey())


def build_idl() -> dict[str, Any]:
    def struct_fields(fields: list[tuple[str, object]]) -> list[dict[str, Any]]:
        return [{"name": name, "type": idl_type(kind)} for name, kind in fields]

    types = []
    for name, fields in [*spec.ACCOUNTS.items(), *spec.EVENTS.items(), *spec.TYPES.items()]:
        types.append({"name": name, "type": {"kind": "struct", "fields": struct_fields(fields)}})
    return {
        "address": program_address(),
        "metadata": {
            "name": spec.PROGRAM_NAME,
            "version": spec.PROGRAM_VERSION,
            "spec": "0.1.0",
            "description": spec.PROGRAM_DESCRIPTION,
        },
        "instructions": [
            {
                "name": ix["name"],
                "docs": ix["docs"],
                "discriminator": list(discriminator("global", ix["name"])),
                "accounts": ix["accounts"],
                "args": [{"name": n, "type": idl_type(k)} for n, k in ix["args"]],
            }
            for ix in spec.INSTRUCTIONS
        ],
        "accounts": [
            {"name": name, "discriminator": list(discriminator("account", name))}
            for name in spec.ACCOUNTS
        ],
        "events": [
            {"name": name, "discriminator": list(discriminator("event", name))}
            for name in spec.EVENTS
        ],
        "errors": [
            {"code": spec.ERROR_CODE_BASE + i, "name": name, "msg": msg}
            for i, (name, msg) in enumerate(spec.ERRORS)
        ],
        "types": types,
    }


def _b58decode(text: str) -> bytes:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    number = 0
    for ch in text:
        number = number * 58 + alphabet.index(ch)
    raw = number.to_bytes(32, "big")
    if len(raw) != 32:
        raise ValueError(f"{text} is not a 32-byte address")
    return raw


def _article(name: str) -> str:
    return "an" if name[0] in "AEIOU" else "a"


def _snake_upper(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i:
            out.append("_")
        out.append(ch.upper())
    return "".join(out)


def _disc_const(name: str, disc: bytes) -> str:
    value = int.from_bytes(disc, "little")
    return f"    pub const {name}: u64 = 0x{value:016x};\n"


def build_rust() -> str:
    lines = [
        "// @generated by anchor/tools/gen_interface.py from anchor/tools/interface_spec.py.\n",
        "// Do not edit: change the spec and re-run the generator (a test checks this file).\n",
        "//! Interface constants: Anchor discriminators (read as little-endian u64), account\n",
        "//! byte offsets and sizes, argument layouts, error codes.\n\n",
        "#![allow(dead_code)]\n\n",
        '/// Instruction discriminators: sha256("global:<name>")[..8] as a LE u64.\n',
        "pub mod ix {\n",
    ]
    for ix in spec.INSTRUCTIONS:
        lines.append(_disc_const(ix["name"].upper(), discriminator("global", ix["name"])))
    lines.append('}\n\n/// Account discriminators: sha256("account:<Name>")[..8].\n')
    lines.append("pub mod disc {\n")
    for name in spec.ACCOUNTS:
        lines.append(_disc_const(_snake_upper(name), discriminator("account", name)))
    lines.append('}\n\n/// Event discriminators: sha256("event:<Name>")[..8].\n')
    lines.append("pub mod event {\n")
    for name in spec.EVENTS:
        lines.append(_disc_const(_snake_upper(name), discriminator("event", name)))
    lines.append("}\n\n")

    def emit_layout(
        module: str, fields: list[tuple[str, object]], start: int, aligned: bool, doc: str
    ) -> None:
        rows, size = layout(fields, start)
        lines.append(f"/// {doc}\n")
        lines.append(f"pub mod {module} {{\n")
        for (name, offset, _size), (_, kind) in zip(rows, fields, strict=True):
            if aligned and offset % field_alignment(kind):
                raise SystemExit(f"{module}.{name} at offset {offset} is misaligned")
            lines.append(f"    pub const {name.upper()}: usize = {offset};\n")
        lines.append(f"    pub const SIZE: usize = {size};\n}}\n\n")

    for name, fields in spec.ACCOUNTS.items():
        emit_layout(
            _snake_upper(name).lower(),
            fields,
            8,
            True,
            f"Byte offsets in {_article(name)} {name} account (discriminator at 0).",
        )
    for name, fields in spec.EVENTS.items():
        emit_layout(
            f"ev_{_snake_upper(name).lower()}",
            fields,
            8,
            False,
            f"Byte offsets in {_article(name)} {name} event payload (discriminator at 0).",
        )
    for name, fields in spec.TYPES.items():
        emit_layout(
            _snake_upper(name).lower(),
            fields,
            0,
            False,
            f"Byte offsets in one Borsh-encoded {name}.",
        )

    lines.append("/// Interface constants shared with clients.\npub mod consts {\n")
    for const_name in (
        "MAX_DEVICES",
        "ROLE_SELLER",
        "ROLE_BUYER",
        "SETTLE_ACCOUNTS_PER_TRADE",
        "REPUTATION_REWARD",
        "DISPUTE_PENALTY",
        "MAX_DISPUTE_WINDOW_SECONDS",
        "RESERVATION_SECONDS",
    ):
        lines.append(f"    pub const {const_name}: u64 = {getattr(spec, const_name)};\n")
    for name, value in spec.TRADE_STATUS.items():
        lines.append(f"    pub const STATUS_{name.upper()}: u8 = {value};\n")
    for name, value in spec.DISPUTED_BY.items():
        lines.append(f"    pub const DISPUTED_BY_{name.upper()}: u8 = {value};\n")
    lines.append("}\n\n/// Programs this one calls or accepts (raw 32-byte addresses).\n")
    lines.append("#[rustfmt::skip]\npub mod ids {\n")
    lines.append("    use crate::sys::Pubkey;\n")
    for const_name, address in spec.WELL_KNOWN_PROGRAMS.items():
        raw = ", ".join(str(b) for b in _b58decode(address))
        lines.append(f"    /// {address}\n")
        lines.append(f"    pub const {const_name}: Pubkey = Pubkey([{raw}]);\n")
    lines.append("}\n\n/// Custom error codes (Anchor numbering from 6000).\npub mod err {\n")
    lines.append("    use crate::sys::{error, Error};\n")
    for i, (name, msg) in enumerate(spec.ERRORS):
        lines.append(f"    /// {msg}\n")
        lines.append(
            f"    pub const {_snake_upper(name)}: Error = error({spec.ERROR_CODE_BASE + i});\n"
        )
    lines.append("}\n")
    return "".join(lines)


def rendered() -> dict[Path, str]:
    return {
        IDL_PATH: json.dumps(build_idl(), indent=2) + "\n",
        RUST_PATH: build_rust(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file is stale")
    args = parser.parse_args()
    stale = []
    for path, text in rendered().items():
        current = path.read_text() if path.exists() else None
        if current != text:
            if args.check:
                stale.append(str(path.relative_to(REPO_DIR)))
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text)
                print(f"wrote {path.relative_to(REPO_DIR)}")
    if stale:
        print("stale (run anchor/tools/gen_interface.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
