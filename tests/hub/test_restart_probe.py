"""After a hub restart the batteries it knew are asked at once, so trading resumes without
waiting for each battery's next status (whose retained birth is too old to count as life)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.brokers import embedded_broker
from tests.hub.helpers import hub_settings, running_hub, sim_fleet, wait_for

pytestmark = pytest.mark.slow


async def test_a_restarted_hub_probes_known_batteries_and_trades_at_once(tmp_path: Path) -> None:
    async with embedded_broker() as url:
        # silence limit 3 x 1 s; the batteries report status only every 60 s, so after the
        # restart only a probe's answer can show them alive within the test's window
        settings = hub_settings(tmp_path, url, status_period_ms=1000)
        async with sim_fleet(settings, url, count=4, overrides={"status_interval_ms": 60_000}):
            async with running_hub(settings) as first:
                assert first.auctions is not None
                await wait_for(lambda: first.auctions.totals.trades >= 2, 20, "first trades")
            await asyncio.sleep(3.5)  # the retained births are now older than the limit
            started = time.monotonic()
            async with running_hub(settings) as second:
                assert second.auctions is not None and second.registry is not None
                auctions, registry = second.auctions, second.registry
                await wait_for(lambda: len(registry.online()) == 4, 3, "batteries online")
                await wait_for(lambda: auctions.totals.trades >= 1, 10, "a trade")
                assert time.monotonic() - started < 10  # not a 60 s status period
                assert second.metrics.counters["unmatched_responses"] == 0
