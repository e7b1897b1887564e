"""Reproducible build of the on-chain program from Debian packages (no Solana toolchain).

    rustc (rustc-web) --target bpfel-unknown-none --emit=llvm-bc -C panic=abort
      -> llvm-link-22 with libcore's bitcode (libstd-rust-web-dev-bpf), only what is used
      -> opt-22: internalize everything but `entrypoint`, -O3, strip debug info
      -> llc-22 -march=bpfel -mcpu=v2 --bpf-stack-size=4096 -filetype=obj
      -> tools/sbf_elf.py: relocatable object -> sBPF v0 shared object

Usage: python anchor/build.py [--out PATH] [--check-deterministic]
Writes anchor/target/etp_settlement.so (git-ignored). The same crate builds with
`cargo build-sbf` where Solana's platform tools are installed (see anchor/README.md).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ANCHOR_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(ANCHOR_DIR / "tools"))

from sbf_elf import LinkError, link_sbf  # noqa: E402

CRATE_DIR = ANCHOR_DIR / "programs" / "etp_settlement"
CRATE_NAME = "etp_settlement"
DEFAULT_OUT = ANCHOR_DIR / "target" / f"{CRATE_NAME}.so"
TARGET = "bpfel-unknown-none"
LLVM_VERSION = "22"
SETUP_HINT = "run `sudo anchor/setup-deps.sh` (Debian: rustc-web llvm-22 libstd-rust-web-dev-bpf)"


class BuildError(Exception):
    """A build step failed or a tool is missing; the message says which and what to do."""


@dataclass(frozen=True)
class Toolchain:
    """Absolute paths of the tools the build runs."""

    rustc: str
    llvm_link: str
    opt: str
    llc: str
    libcore_bitcode: Path


def find_toolchain() -> Toolchain:
    """Locate Debian's rustc (not a rustup one: it lacks the bpfel libcore) and LLVM 22."""
    rustc = os.environ.get("ETP_SBF_RUSTC", "/usr/bin/rustc")
    missing = []
    if not Path(rustc).is_file():
        missing.append(f"rustc ({rustc})")
    tools = {}
    for tool in ("llvm-link", "opt", "llc"):
        path = shutil.which(f"{tool}-{LLVM_VERSION}")
        if path is None:
            missing.append(f"{tool}-{LLVM_VERSION}")
        tools[tool] = path or ""
    sysroot = Path("/usr/lib/rustlib") / TARGET / "lib"
    if Path(rustc).is_file():
        probe = subprocess.run([rustc, "--print", "sysroot"], capture_output=True, text=True)
        if probe.returncode == 0:
            sysroot = Path(probe.stdout.strip()) / "lib" / "rustlib" / TARGET / "lib"
    cores = sorted(sysroot.glob("libcore-*.rlib"))
    if not cores:
        missing.append(f"libcore for {TARGET} (in {sysroot})")
    if missing:
        raise BuildError("missing build tools: " + ", ".join(missing) + "; " + SETUP_HINT)
    return Toolchain(rustc, tools["llvm-link"], tools["opt"], tools["llc"], cores[0])


def _run(argv: list[str], step: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"{step} failed ({' '.join(argv[:2])} ...):\n{result.stderr.strip()}")


def _extract_core_bitcode(toolchain: Toolchain, workdir: Path) -> Path:
    """libcore's rlib is an ar archive whose object member is LLVM bitcode."""
    data = toolchain.libcore_bitcode.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise BuildError(f"{toolchain.libcore_bitcode} is not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        size = int(header[48:58].decode().strip())
        body = data[pos + 60 : pos + 60 + size]
        if body.startswith(b"BC\xc0\xde"):
            out = workdir / "core.bc"
            out.write_bytes(body)
            return out
        pos += 60 + size + (size & 1)
    raise BuildError(f"no LLVM bitcode in {toolchain.libcore_bitcode}")


def build(out: Path = DEFAULT_OUT, verbose: bool = True, source: Path | None = None) -> Path:
    """Build the program (or another crate root `source`); returns the path of the .so."""
    toolchain = find_toolchain()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="etp-sbf-") as tmp:
        work = Path(tmp)
        crate_bc = work / f"{CRATE_NAME}.bc"
        env_free_rustc = [
            toolchain.rustc,
            "--edition=2021",
            "--crate-type=cdylib",
            f"--crate-name={CRATE_NAME}",
            f"--target={TARGET}",
            "-C",
            "panic=abort",
            "-C",
            "opt-level=3",
            "-C",
            "codegen-units=1",
            "-C",
            "debuginfo=0",
            "-C",
            "target-cpu=v2",
            # file names inside the bitcode must not depend on where the repo lives
            f"--remap-path-prefix={ANCHOR_DIR}=anchor",
            "--emit=llvm-bc",
            "-o",
            str(crate_bc),
            str(source or CRATE_DIR / "src" / "lib.rs"),
        ]
        _run(env_free_rustc, "rustc")
        core_bc = _extract_core_bitcode(toolchain, work)
        linked = work / "linked.bc"
        _run(
            [toolchain.llvm_link, "--only-needed", str(crate_bc), str(core_bc), "-o", str(linked)],
            "llvm-link",
        )
        optimized = work / "opt.bc"
        _run(
            [
                toolchain.opt,
                "--internalize-public-api-list=entrypoint",
                "-passes=internalize,globaldce,strip-debug-declare,default<O3>,globaldce",
                "--strip-debug",
                str(linked),
                "-o",
                str(optimized),
            ],
            "opt",
        )
        obj = work / f"{CRATE_NAME}.o"
        _run(
            [
                toolchain.llc,
                "-march=bpfel",
                "-mcpu=v2",
                "--bpf-stack-size=4096",
                "-filetype=obj",
                "-O3",
                str(optimized),
                "-o",
                str(obj),
            ],
            "llc",
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        # the relocatable object, kept for `llvm-objdump-22 -d` when something needs a look
        shutil.copyfile(obj, out.with_suffix(".o"))
        try:
            result = link_sbf(obj.read_bytes())
        except LinkError as exc:
            raise BuildError(f"ELF rewrite failed: {exc}") from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(result.so_bytes)
    if verbose:
        digest = hashlib.sha256(result.so_bytes).hexdigest()
        print(
            f"built {out} ({len(result.so_bytes)} bytes, text {result.text_size}, "
            f"rodata {result.rodata_size}, syscalls {', '.join(result.syscalls)}) "
            f"sha256 {digest} in {time.monotonic() - started:.1f} s"
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--check-deterministic",
        action="store_true",
        help="build twice and fail if the bytes differ",
    )
    args = parser.parse_args()
    try:
        path = build(args.out)
        if args.check_deterministic:
            first = path.read_bytes()
            second_path = build(args.out.with_suffix(".again.so"), verbose=False)
            second = second_path.read_bytes()
            second_path.unlink()
            if first != second:
                print("NOT deterministic: two builds differ", file=sys.stderr)
                return 1
            print("deterministic: two builds are byte-identical")
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
