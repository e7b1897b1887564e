"""A fleet of simulated batteries trading with a hub at a fast cadence: what faults it takes.

`python -m hub.tools.sim.power_run --seconds 60 --interval-ms 200` starts a hub (embedded
broker, settlement off) and a SimFleet (the firmware core on CPython), trades for the given
time, and prints JSON: trades, energy sold, self-detected faults by reason code (10 =
voltage_out_of_range), boards faulted at the end, and per-minute fault rate. Issue #15's
reproduction: lots sold at once are discharged together; their IR drop must not take a pack
below its cut-off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from hub.tools.ports import free_port

__all__ = ["run"]


async def run(seconds: float, interval_ms: int, count: int, seed: int) -> dict[str, Any]:
    """Trade for `seconds` at `interval_ms`; the fleet's faults and trades."""
    from hub.runtime import HubRuntime, configure_logging
    from hub.settings import Settings, load_master_secret
    from hub.tools.sim import SimConfig, SimFleet

    with tempfile.TemporaryDirectory(prefix="etp-power-run-") as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            mqtt_port=free_port(),
            http_port=free_port(),
            auction_interval_ms=interval_ms,
            log_level="error",
            settlement_network="off",
            seed=seed,
        )
        configure_logging(settings.log_level, settings.log_format)  # quiet: the JSON is the output
        runtime = HubRuntime(settings)
        await runtime.start()
        fleet = SimFleet(
            SimConfig(
                mqtt_url=runtime.mqtt_url,
                site=settings.site,
                count=count,
                seed=seed,
                master_secret=load_master_secret(settings.master_secret_path()),
            )
        )
        first_fault_s: float | None = None
        started = time.monotonic()
        try:
            await fleet.start()
            while time.monotonic() - started < seconds:
                await asyncio.sleep(0.5)
                if first_fault_s is None and any(c.stats["faults"] for c in fleet.cores.values()):
                    first_fault_s = round(time.monotonic() - started, 1)
            if runtime.auctions is not None:
                await runtime.auctions.stop()
        finally:
            await fleet.stop()
            await runtime.stop()
        elapsed = time.monotonic() - started
        reasons: Counter[int] = Counter()
        for audit in fleet.audits.values():
            for record in audit.records:
                if record.get("k") == "fault":
                    reasons[int(record["r"])] += 1
        cores = fleet.cores.values()
        rejects: Counter[str] = Counter()
        for core in cores:
            rejects.update(cast(dict[str, int], core.stats["reject_reasons"]))
        voltage = reasons.get(10, 0)
        return {
            "boards": count,
            "interval_ms": interval_ms,
            "seconds": round(elapsed, 1),
            "trades": sum(c.stats["trades"] for c in cores),
            "sold_wh": sum(c.stats["sold_wh"] for c in cores),
            "faults_by_reason": {str(k): v for k, v in sorted(reasons.items())},
            "voltage_faults": voltage,
            "voltage_faults_per_min": round(voltage * 60 / elapsed, 1),
            "boards_faulted_at_end": sum(1 for c in cores if c.faulted),
            "first_fault_s": first_fault_s,
            "reject_reasons": dict(sorted(rejects.items())),
        }


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="trading time")
    parser.add_argument("--interval-ms", type=int, default=200, help="per-battery auction cadence")
    parser.add_argument("--count", type=int, default=10, help="simulated batteries")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    result = asyncio.run(run(args.seconds, args.interval_ms, args.count, args.seed))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
