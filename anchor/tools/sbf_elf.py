"""ELF rewriter: turns llc's relocatable BPF object into an sBPF v0 shared object.

The Solana loader (anza-xyz/sbpf, `src/elf.rs`, the "lenient" parser used for sBPF v0)
accepts an ELF that is:

- 64-bit little-endian, `ET_DYN`, `e_machine` 247 (EM_BPF), `e_flags` 0 (sBPF v0);
- exactly one `.text` section, with `sh_addr == sh_offset`; `e_entry` inside it;
- read-only data in `.rodata` (also `sh_addr == sh_offset`), mapped at 0x1_0000_0000 + address;
- no writable `.data` / `.bss`;
- calls to other functions encoded pc-relative (`call imm`, imm != -1): the loader
  registers every target itself;
- calls to syscalls encoded `call -1` with an `R_BPF_64_32` entry in the dynamic relocation
  table naming a `.dynsym` symbol; the loader hashes the name (murmur3) and binds it.

This module does the work a linker would do for that format, from scratch: it merges the
object's allocated sections, resolves every relocation, and writes the result. It refuses
(with a `LinkError` naming the reason) anything the format cannot express: writable data,
unknown external symbols, relocation types it does not know, function pointers called
through `callx`.

Output is a pure function of the input bytes: same object, same shared object.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

__all__ = ["KNOWN_SYSCALLS", "SYSCALL_ALIASES", "LinkError", "LinkResult", "link_sbf"]

MM_PROGRAM_START = 0x1_0000_0000  # where the loader maps .text/.rodata (sBPF v0)

# Relocation types of the BPF ELF ABI (LLVM BPFELFObjectWriter).
R_BPF_NONE = 0
R_BPF_64_64 = 1  # lddw: 64-bit address split over two instruction immediates
R_BPF_64_ABS64 = 2  # 64-bit data word holding an address
R_BPF_64_ABS32 = 3
R_BPF_64_NODYLD32 = 4  # debug info only
R_BPF_64_32 = 10  # call instruction immediate

OP_CALL = 0x85
OP_CALLX = 0x8D
OP_LDDW = 0x18
INSN_SIZE = 8

# Symbols LLVM emits calls to for memory intrinsics, bound to the runtime's equivalents
# (same argument order; the C return value is never used by LLVM's intrinsic lowering).
SYSCALL_ALIASES = {
    "memcpy": "sol_memcpy_",
    "memmove": "sol_memmove_",
    "memset": "sol_memset_",
}

# Syscalls a v0 program may import (agave's `syscalls` module registers these names).
KNOWN_SYSCALLS = frozenset(
    {
        "abort",
        "sol_panic_",
        "sol_log_",
        "sol_log_64_",
        "sol_log_compute_units_",
        "sol_log_pubkey",
        "sol_log_data",
        "sol_create_program_address",
        "sol_try_find_program_address",
        "sol_sha256",
        "sol_keccak256",
        "sol_memcpy_",
        "sol_memmove_",
        "sol_memset_",
        "sol_memcmp_",
        "sol_invoke_signed_c",
        "sol_invoke_signed_rust",
        "sol_get_clock_sysvar",
        "sol_get_rent_sysvar",
        "sol_set_return_data",
        "sol_get_return_data",
        "sol_get_stack_height",
        "sol_remaining_compute_units",
    }
)

# ELF constants
ET_DYN = 3
EM_BPF = 247
SHT_PROGBITS = 1
SHT_STRTAB = 3
SHT_DYNAMIC = 6
SHT_REL = 9
SHT_DYNSYM = 11
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4
DT_NULL, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 5, 6, 10, 11
DT_REL, DT_RELSZ, DT_RELENT = 17, 18, 19
STB_GLOBAL = 1
STT_NOTYPE = 0


class LinkError(Exception):
    """The object cannot become an sBPF v0 program; the message says why."""


@dataclass
class LinkResult:
    """The shared object and facts about it the build reports."""

    so_bytes: bytes
    text_size: int
    rodata_size: int
    syscalls: list[str] = field(default_factory=list)


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) // alignment * alignment


def link_sbf(object_bytes: bytes, entry_symbol: str = "entrypoint") -> LinkResult:
    """Link one relocatable BPF object (from `llc -filetype=obj`) into an sBPF v0 .so."""
    elf = ELFFile(io.BytesIO(object_bytes))
    if elf.header["e_machine"] != "EM_BPF" or elf.elfclass != 64 or not elf.little_endian:
        raise LinkError("input is not a 64-bit little-endian BPF object")

    sections = list(elf.iter_sections())
    text_parts: list[int] = []
    ro_parts: list[int] = []
    for index, section in enumerate(sections):
        flags = section["sh_flags"]
        if not flags & SHF_ALLOC or section["sh_size"] == 0:
            continue
        name = section.name
        if flags & SHF_EXECINSTR:
            text_parts.append(index)
        elif flags & SHF_WRITE and not name.startswith(".data.rel.ro"):
            raise LinkError(
                f"section {name} is writable: sBPF programs have no writable globals "
                "(use `static` only for constants)"
            )
        elif section["sh_type"] == 8:  # SHT_NOBITS with size > 0
            raise LinkError(f"section {name} is zero-initialised global state: not supported")
        else:
            ro_parts.append(index)

    # --- layout: ELF header, .text, .rodata, dynamic tables, names, section headers
    base_of: dict[int, int] = {}
    text_bytes = bytearray()
    text_offset = 0x40
    for index in text_parts:
        sec = sections[index]
        pad = _align(len(text_bytes), max(8, sec["sh_addralign"])) - len(text_bytes)
        text_bytes += b"\0" * pad
        base_of[index] = text_offset + len(text_bytes)
        text_bytes += sec.data()
    if not text_bytes:
        raise LinkError("object has no code")
    rodata_offset = _align(text_offset + len(text_bytes), 8)
    ro_bytes = bytearray()
    for index in ro_parts:
        sec = sections[index]
        pad = _align(len(ro_bytes), max(1, sec["sh_addralign"])) - len(ro_bytes)
        ro_bytes += b"\0" * pad
        base_of[index] = rodata_offset + len(ro_bytes)
        ro_bytes += sec.data()

    symtab = elf.get_section_by_name(".symtab")
    if not isinstance(symtab, SymbolTableSection):
        raise LinkError("object has no symbol table")
    symbols = list(symtab.iter_symbols())

    def symbol_address(sym_index: int) -> int | None:
        """File address of a defined symbol, None for an undefined (external) one."""
        sym = symbols[sym_index]
        shndx = sym["st_shndx"]
        if shndx == "SHN_UNDEF":
            return None
        if not isinstance(shndx, int) or shndx not in base_of:
            raise LinkError(f"symbol {sym.name!r} lives in a section that is not loaded")
        return base_of[shndx] + sym["st_value"]

    entry = None
    for sym in symbols:
        if sym.name == entry_symbol and sym["st_shndx"] != "SHN_UNDEF":
            entry = base_of[sym["st_shndx"]] + sym["st_value"]
    if entry is None:
        raise LinkError(f"no `{entry_symbol}` function defined")

    text = text_bytes  # patched in place; offsets below are relative to text_offset
    ro = ro_bytes
    imports: dict[str, int] = {}  # syscall name -> dynsym index
    dyn_relocs: list[tuple[int, str]] = []  # (file offset of call insn, syscall name)

    for rel_section in sections:
        if not isinstance(rel_section, RelocationSection):
            continue
        if rel_section["sh_type"] == "SHT_RELA":
            raise LinkError("RELA relocations are not produced by llc for BPF; unexpected input")
        target_index = rel_section["sh_info"]
        if target_index not in base_of:
            continue  # relocations of debug sections we do not emit
        target_base = base_of[target_index]
        in_text = target_index in text_parts
        buf, buf_base = (text, text_offset) if in_text else (ro, rodata_offset)
        for rel in rel_section.iter_relocations():
            r_type = rel["r_info_type"]
            r_sym = rel["r_info_sym"]
            at = target_base + rel["r_offset"] - buf_base  # position inside buf
            sym_name = symbols[r_sym].name
            if r_type == R_BPF_64_64:
                if not in_text or buf[at] != OP_LDDW:
                    raise LinkError(f"R_BPF_64_64 not on an lddw (symbol {sym_name!r})")
                address = symbol_address(r_sym)
                if address is None:
                    raise LinkError(f"address of undefined symbol {sym_name!r} taken")
                addend = struct.unpack_from("<i", buf, at + 4)[0]
                value = MM_PROGRAM_START + address + addend
                struct.pack_into("<I", buf, at + 4, value & 0xFFFFFFFF)
                struct.pack_into("<I", buf, at + 12, value >> 32)
            elif r_type == R_BPF_64_ABS64:
                if in_text:
                    raise LinkError("R_BPF_64_ABS64 inside code")
                address = symbol_address(r_sym)
                if address is None:
                    raise LinkError(f"data refers to undefined symbol {sym_name!r}")
                addend = struct.unpack_from("<q", buf, at)[0]
                struct.pack_into("<Q", buf, at, MM_PROGRAM_START + address + addend)
            elif r_type == R_BPF_64_32:
                if not in_text or buf[at] != OP_CALL:
                    raise LinkError(f"R_BPF_64_32 not on a call (symbol {sym_name!r})")
                address = symbol_address(r_sym)
                if address is None:
                    name = SYSCALL_ALIASES.get(sym_name, sym_name)
                    if name not in KNOWN_SYSCALLS:
                        raise LinkError(
                            f"undefined symbol {sym_name!r}: not a Solana syscall. "
                            "Code that needs it (memcmp, 128-bit arithmetic, core panics "
                            "not linked) must be written without it."
                        )
                    imports.setdefault(name, len(imports) + 1)
                    buf[at + 1] = 0  # dst=0, src=0: a syscall, bound by the loader
                    struct.pack_into("<i", buf, at + 4, -1)
                    dyn_relocs.append((buf_base + at, name))
                else:
                    # LLVM encodes the implicit addend as (addend / 8) - 1 in imm.
                    implicit = struct.unpack_from("<i", buf, at + 4)[0]
                    target = address + (implicit + 1) * INSN_SIZE
                    here = buf_base + at
                    delta = (target - here) // INSN_SIZE - 1
                    struct.pack_into("<i", buf, at + 4, delta)
            elif r_type in (R_BPF_64_NODYLD32, R_BPF_NONE):
                continue
            else:
                raise LinkError(f"relocation type {r_type} (symbol {sym_name!r}) not supported")

    for i in range(0, len(text), INSN_SIZE):
        if text[i] == OP_CALLX:
            raise LinkError(
                f"indirect call (callx) at text offset {i}: function pointers / trait objects "
                "are not supported by this build route"
            )
        if text[i] == OP_CALL:
            imm = struct.unpack_from("<i", text, i + 4)[0]
            if imm != -1:
                target = i // INSN_SIZE + 1 + imm
                if not 0 <= target < len(text) // INSN_SIZE:
                    raise LinkError(f"call at text offset {i} jumps outside the program")

    return LinkResult(
        so_bytes=_write_shared_object(
            bytes(text), bytes(ro), text_offset, rodata_offset, entry, imports, dyn_relocs
        ),
        text_size=len(text),
        rodata_size=len(ro),
        syscalls=sorted(imports),
    )


def _write_shared_object(
    text: bytes,
    ro: bytes,
    text_offset: int,
    rodata_offset: int,
    entry: int,
    imports: dict[str, int],
    dyn_relocs: list[tuple[int, str]],
) -> bytes:
    """Serialise the sections into an ET_DYN image the sBPF loader accepts."""
    out = bytearray(b"\0" * text_offset)
    out += text
    out += b"\0" * (rodata_offset - len(out))
    out += ro

    # .dynstr and .dynsym: null symbol, then one undefined global per syscall.
    ordered = sorted(imports.items(), key=lambda item: item[1])
    dynstr = bytearray(b"\0")
    name_offset = {}
    for name, _ in ordered:
        name_offset[name] = len(dynstr)
        dynstr += name.encode() + b"\0"
    dynsym = bytearray(b"\0" * 24)
    for name, _ in ordered:
        dynsym += struct.pack(
            "<IBBHQQ", name_offset[name], (STB_GLOBAL << 4) | STT_NOTYPE, 0, 0, 0, 0
        )
    reldyn = bytearray()
    for offset, name in sorted(dyn_relocs):
        reldyn += struct.pack("<QQ", offset, (imports[name] << 32) | R_BPF_64_32)

    def place(data: bytes, alignment: int) -> int:
        out.extend(b"\0" * (_align(len(out), alignment) - len(out)))
        position = len(out)
        out.extend(data)
        return position

    dynsym_off = place(bytes(dynsym), 8)
    dynstr_off = place(bytes(dynstr), 1)
    reldyn_off = place(bytes(reldyn), 8) if reldyn else 0
    dyn_entries = [
        (DT_SYMTAB, dynsym_off),
        (DT_STRTAB, dynstr_off),
        (DT_STRSZ, len(dynstr)),
        (DT_SYMENT, 24),
    ]
    if reldyn:
        dyn_entries += [(DT_REL, reldyn_off), (DT_RELSZ, len(reldyn)), (DT_RELENT, 16)]
    dyn_entries.append((DT_NULL, 0))
    dynamic = b"".join(struct.pack("<qQ", tag, value) for tag, value in dyn_entries)
    dynamic_off = place(dynamic, 8)

    names = [".text", ".rodata", ".dynsym", ".dynstr", ".rel.dyn", ".dynamic", ".shstrtab"]
    shstrtab = bytearray(b"\0")
    name_at = {}
    for name in names:
        name_at[name] = len(shstrtab)
        shstrtab += name.encode() + b"\0"
    shstrtab_off = place(bytes(shstrtab), 1)

    # (name, type, flags, addr, offset, size, link, info, align, entsize)
    headers = [(0, 0, 0, 0, 0, 0, 0, 0, 0, 0)]
    headers.append(
        (
            name_at[".text"],
            SHT_PROGBITS,
            SHF_ALLOC | SHF_EXECINSTR,
            text_offset,
            text_offset,
            len(text),
            0,
            0,
            8,
            0,
        )
    )
    if ro:
        headers.append(
            (
                name_at[".rodata"],
                SHT_PROGBITS,
                SHF_ALLOC,
                rodata_offset,
                rodata_offset,
                len(ro),
                0,
                0,
                8,
                0,
            )
        )
    dynstr_index = len(headers) + 1
    headers.append(
        (
            name_at[".dynsym"],
            SHT_DYNSYM,
            SHF_ALLOC,
            dynsym_off,
            dynsym_off,
            len(dynsym),
            dynstr_index,
            1,
            8,
            24,
        )
    )
    headers.append(
        (name_at[".dynstr"], SHT_STRTAB, SHF_ALLOC, dynstr_off, dynstr_off, len(dynstr), 0, 0, 1, 0)
    )
    if reldyn:
        headers.append(
            (
                name_at[".rel.dyn"],
                SHT_REL,
                SHF_ALLOC,
                reldyn_off,
                reldyn_off,
                len(reldyn),
                dynstr_index - 1,
                0,
                8,
                16,
            )
        )
    headers.append(
        (
            name_at[".dynamic"],
            SHT_DYNAMIC,
            SHF_ALLOC | SHF_WRITE,
            dynamic_off,
            dynamic_off,
            len(dynamic),
            dynstr_index,
            0,
            8,
            16,
        )
    )
    shstrndx = len(headers)
    headers.append(
        (name_at[".shstrtab"], SHT_STRTAB, 0, 0, shstrtab_off, len(shstrtab), 0, 0, 1, 0)
    )

    shoff = _align(len(out), 8)
    out.extend(b"\0" * (shoff - len(out)))
    for h in headers:
        out += struct.pack("<IIQQQQIIQQ", *h)

    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + b"\0" * 8  # 64-bit, LE, version 1, SysV ABI
    header = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        ET_DYN,
        EM_BPF,
        1,
        entry,
        0x40,
        shoff,
        0,  # e_flags 0: sBPF v0
        64,
        56,
        0,
        64,
        len(headers),
        shstrndx,
    )
    out[0:64] = header
    return bytes(out)
