"""Read and verify a board's audit trail (the firmware's own format, see firmware/README.md).

A trail is two rings of files in one directory: the bid ring `audit.<i>` (audit.0 newest)
and the trade ring `trade.<i>` (numbered up, the highest newest). Every record carries one
sequence number `n` across both, so a trail reads back oldest first by `n`.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from firmware.etp_node.audit_dump import parse_log
from hub.tools.firmware.binaries import venv_tool

BID_FILES = 64  # audit.<i> files looked for: far more than a board keeps (audit_files)
_COPY_BATCH = 32  # files per mpremote call


class AuditReadError(RuntimeError):
    """The audit files could not be fetched from the board."""


@dataclass
class AuditReport:
    """Verified records (oldest first), torn/corrupt lines skipped, and the files read.

    `complete_from`: the n of the bid ring's oldest record: from there on every record is
    kept; before it only trade records are (the bid ring rotated the rest out)."""

    records: list[dict] = field(default_factory=list)
    torn: int = 0
    files: list[str] = field(default_factory=list)
    complete_from: int | None = None

    @property
    def gaps(self) -> int:
        """Missing sequence numbers from `complete_from` on (before it, only trades are kept
        by design; a wiped trail starting again at 0 is not a gap)."""
        start = self.complete_from if self.complete_from is not None else -1
        numbers = [r["n"] for r in self.records if isinstance(r.get("n"), int) and r["n"] >= start]
        return sum(1 for a, b in pairwise(numbers) if b != a + 1 and b != 0)

    @property
    def trades(self) -> list[dict]:
        """The trade records, oldest first."""
        return [r for r in self.records if r.get("k") == "trade"]

    def for_auction(self, auction: int) -> list[dict]:
        """Every kept record of one auction, oldest first."""
        return [r for r in self.records if r.get("auc") == auction]


def _segment(name: str) -> tuple[str, int] | None:
    """('audit'|'trade', index) of a trail file name, None for any other file."""
    ring, _, index = name.partition(".")
    if ring not in ("audit", "trade") or not index.isdigit():
        return None
    return ring, int(index)


def trail_names(names: list[str]) -> list[str]:
    """The trail's file names among `names`, each ring oldest first (bid ring, then trades)."""
    bids: list[tuple[int, str]] = []
    trades: list[tuple[int, str]] = []
    for name in names:
        parsed = _segment(name)
        if parsed is None:
            continue
        ring, index = parsed
        (bids if ring == "audit" else trades).append((index, name))
    return [name for _, name in sorted(bids, reverse=True)] + [name for _, name in sorted(trades)]


def read_audit_dir(directory: Path, files: int = BID_FILES) -> AuditReport:
    """Parse a trail directory: both rings, every record, in sequence order (oldest first).

    files: bid ring files looked at (audit.0 .. audit.<files-1>)."""
    directory = Path(directory)
    names = [
        name
        for name in trail_names([p.name for p in directory.iterdir()] if directory.is_dir() else [])
        if not name.startswith("audit.") or int(name[6:]) < files
    ]
    report = AuditReport()
    for name in names:
        records, torn = parse_log((directory / name).read_bytes())
        if name.startswith("audit.") and records and report.complete_from is None:
            report.complete_from = records[0].get("n")  # the bid ring's oldest file comes first
        report.records.extend(records)
        report.torn += torn
        report.files.append(name)
    report.records.sort(key=lambda r: r["n"] if isinstance(r.get("n"), int) else -1)
    return report


def fetch_from_board(port: str, dest: Path, audit_dir: str = "audit") -> Path:
    """Copy every file of a board's trail (both rings) to dest with mpremote; returns dest."""
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
    names = trail_names([line.split()[-1] for line in listing.stdout.splitlines() if line.split()])
    for start in range(0, len(names), _COPY_BATCH):
        batch = names[start : start + _COPY_BATCH]
        result = subprocess.run(
            [mpremote, "connect", port, "fs", "cp"]
            + [f":{audit_dir}/{name}" for name in batch]
            + [str(dest) + "/"],
            capture_output=True,
            text=True,
            timeout=60 + 30 * len(batch),
        )
        if result.returncode != 0:
            raise AuditReadError(
                f"cannot copy {', '.join(batch)} from {port}: {result.stderr.strip()}"
            )
    return dest


def read_board(port: str, audit_dir: str = "audit") -> AuditReport:
    """Fetch and verify the audit trail of the board on a serial port (or simulated pty)."""
    with tempfile.TemporaryDirectory(prefix="etp-audit-") as tmp:
        return read_audit_dir(fetch_from_board(port, Path(tmp), audit_dir))
