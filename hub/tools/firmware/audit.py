"""Read and verify a board's audit trail (the firmware's own format, see firmware/README.md)."""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from firmware.etp_node.audit_dump import parse_log
from hub.tools.firmware.binaries import venv_tool


class AuditReadError(RuntimeError):
    """The audit files could not be fetched from the board."""


@dataclass
class AuditReport:
    """Verified records (oldest first), torn/corrupt lines skipped, and the files read."""

    records: list[dict] = field(default_factory=list)
    torn: int = 0
    files: list[str] = field(default_factory=list)

    @property
    def gaps(self) -> int:
        """Missing sequence numbers between the first and last record (rotation drops old)."""
        numbers = [r["n"] for r in self.records if isinstance(r.get("n"), int)]
        if not numbers:
            return 0
        return sum(1 for a, b in pairwise(numbers) if b != a + 1 and b != 0)


def read_audit_dir(directory: Path, files: int = 16) -> AuditReport:
    """Parse audit.N ... audit.0 in a directory (oldest file first)."""
    report = AuditReport()
    for index in range(files - 1, -1, -1):
        path = Path(directory) / f"audit.{index}"
        if not path.exists():
            continue
        records, torn = parse_log(path.read_bytes())
        report.records.extend(records)
        report.torn += torn
        report.files.append(path.name)
    return report


def fetch_from_board(port: str, dest: Path, audit_dir: str = "audit", files: int = 16) -> Path:
    """Copy a board's audit files to dest with mpremote; returns the local directory."""
    mpremote = venv_tool("mpremote")
    dest.mkdir(parents=True, exist_ok=True)
    listing = subprocess.run(
        [mpremote, "connect", port, "fs", "ls", audit_dir],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if listing.returncode != 0:
        raise AuditReadError(f"cannot list {audit_dir} on {port}: {listing.stderr.strip()}")
    names = [
        line.split()[-1]
        for line in listing.stdout.splitlines()
        if line.strip().split()[-1:] and line.strip().split()[-1].startswith("audit.")
    ]
    for name in names[:files]:
        result = subprocess.run(
            [mpremote, "connect", port, "fs", "cp", f":{audit_dir}/{name}", str(dest / name)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise AuditReadError(f"cannot copy {name} from {port}: {result.stderr.strip()}")
    return dest


def read_board(port: str) -> AuditReport:
    """Fetch and verify the audit trail of the board on a serial port (or simulated pty)."""
    with tempfile.TemporaryDirectory(prefix="etp-audit-") as tmp:
        return read_audit_dir(fetch_from_board(port, Path(tmp)))
