"""The build route and the interface: reproducible bytes, an ELF the sBPF v0 loader's rules
accept, and an IDL that matches what the program answers to (checked independently of the
generator, by hashing the names the way Anchor does)."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import gen_interface
import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection
from sbf_elf import LinkError, link_sbf

from tests.anchor.conftest import sbf_build

REPO = Path(__file__).resolve().parents[2]


def test_build_is_deterministic(program_so: bytes, tmp_path: Path) -> None:
    again = sbf_build.build(tmp_path / "again.so", verbose=False).read_bytes()
    assert again == program_so


def test_elf_follows_the_sbpf_v0_loader_rules(program_so: bytes) -> None:
    elf = ELFFile(io.BytesIO(program_so))
    header = elf.header
    assert header["e_type"] == "ET_DYN" and header["e_machine"] == "EM_BPF"
    assert header["e_flags"] == 0  # sBPF v0
    names = [s.name for s in elf.iter_sections()]
    assert names.count(".text") == 1
    for section in elf.iter_sections():
        if section.name in (".text", ".rodata"):
            assert section["sh_addr"] == section["sh_offset"]
        assert not section.name.startswith((".bss", ".data"))
    text = elf.get_section_by_name(".text")
    dynsym = elf.get_section_by_name(".dynsym")
    reldyn = elf.get_section_by_name(".rel.dyn")
    assert text is not None
    assert isinstance(dynsym, SymbolTableSection) and isinstance(reldyn, RelocationSection)
    assert text["sh_addr"] <= header["e_entry"] < text["sh_addr"] + text["sh_size"]
    code = text.data()
    # every syscall site is `call -1` with a dynamic relocation naming a known syscall
    relocations = list(reldyn.iter_relocations())
    assert relocations
    for rel in relocations:
        at = rel["r_offset"] - text["sh_offset"]
        assert code[at] == 0x85 and struct.unpack_from("<i", code, at + 4)[0] == -1
        assert dynsym.get_symbol(rel["r_info_sym"]).name.startswith("sol_")
    # no indirect calls, no 32-bit ALU (sBPF v0 treats it differently), no JMP32 (not in v0)
    i = 0
    while i < len(code):
        opcode = code[i]
        assert opcode != 0x8D, f"callx at {i}"
        assert opcode & 0x07 not in (0x04, 0x06), f"32-bit ALU/JMP opcode {opcode:#x} at {i}"
        i += 16 if opcode == 0x18 else 8  # lddw spans two slots


def test_program_is_free_of_panics(program_so: bytes) -> None:
    """No panic path survives: the program never imports `abort` or logs a panic."""
    assert b"abort" not in program_so and b"panic" not in program_so


def test_committed_idl_and_rust_interface_are_generated_from_the_spec() -> None:
    result = subprocess.run(
        [sys.executable, str(Path(gen_interface.__file__)), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_idl_discriminators_are_anchors() -> None:
    idl = json.loads((REPO / "anchor" / "idl" / "etp_settlement.json").read_text())
    for ix in idl["instructions"]:
        assert (
            bytes(ix["discriminator"])
            == hashlib.sha256(f"global:{ix['name']}".encode()).digest()[:8]
        )
    for account in idl["accounts"]:
        expected = hashlib.sha256(f"account:{account['name']}".encode()).digest()[:8]
        assert bytes(account["discriminator"]) == expected
    for event in idl["events"]:
        assert (
            bytes(event["discriminator"])
            == hashlib.sha256(f"event:{event['name']}".encode()).digest()[:8]
        )
    assert idl["metadata"]["spec"] == "0.1.0" and idl["errors"][0]["code"] == 6000


def test_rust_constants_match_the_idl() -> None:
    """The program's generated constants carry the same discriminators as the IDL."""
    rust = (REPO / "anchor/programs/etp_settlement/src/interface.rs").read_text()
    idl = json.loads((REPO / "anchor" / "idl" / "etp_settlement.json").read_text())
    for ix in idl["instructions"]:
        value = int.from_bytes(bytes(ix["discriminator"]), "little")
        assert f"pub const {ix['name'].upper()}: u64 = 0x{value:016x};" in rust


def test_idl_address_is_the_committed_program_keypair() -> None:
    from solders.keypair import Keypair

    idl = json.loads((REPO / "anchor" / "idl" / "etp_settlement.json").read_text())
    secret = json.loads((REPO / "anchor" / "keys" / "etp_settlement-keypair.json").read_text())
    assert idl["address"] == str(Keypair.from_bytes(bytes(secret)).pubkey())


def test_missing_tools_give_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETP_SBF_RUSTC", str(tmp_path / "no-rustc"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sbf_build.BuildError) as error:
        sbf_build.find_toolchain()
    message = str(error.value)
    assert "rustc" in message and "llc-22" in message and "setup-deps.sh" in message


def test_linker_refuses_input_that_is_not_a_bpf_object() -> None:
    x86_object = _minimal_elf(machine=62)
    with pytest.raises(LinkError, match="not a 64-bit little-endian BPF object"):
        link_sbf(x86_object)


def _minimal_elf(machine: int) -> bytes:
    """An ELF header with no sections, enough for the linker's first check."""
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8
    return ident + struct.pack("<HHIQQQIHHHHHH", 1, machine, 1, 0, 0, 0, 0, 64, 0, 0, 64, 0, 0)


PROGRAM_SKELETON = """
#![no_std]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! { loop {} }
%s
#[no_mangle]
pub unsafe extern "C" fn entrypoint(input: *mut u8) -> u64 { %s }
"""


def _build_snippet(tmp_path: Path, items: str, body: str) -> bytes:
    source = tmp_path / "lib.rs"
    source.write_text(PROGRAM_SKELETON % (items, body))
    return sbf_build.build(tmp_path / "out.so", verbose=False, source=source).read_bytes()


def test_linker_refuses_writable_globals(program_so: bytes, tmp_path: Path) -> None:
    items = "static mut CALLS: u64 = 5;"
    body = "CALLS += *input as u64; core::ptr::read_volatile(&raw const CALLS)"
    with pytest.raises(sbf_build.BuildError, match="writable"):
        _build_snippet(tmp_path, items, body)


def test_linker_refuses_calls_the_runtime_cannot_bind(program_so: bytes, tmp_path: Path) -> None:
    body = "let a = *(input as *const u64) as u128; ((a * a) >> 64) as u64"
    with pytest.raises(sbf_build.BuildError, match="__multi3"):
        _build_snippet(tmp_path, "", body)


def test_a_minimal_program_links(program_so: bytes, tmp_path: Path) -> None:
    so = _build_snippet(tmp_path, "", "*input as u64")
    assert so.startswith(b"\x7fELF") and len(so) < 2_000
