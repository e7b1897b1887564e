"""GET /api/v1/competition on a running hub trading with simulated batteries: nothing to say
before the first auction, then the report's figures over the recent auctions (the same numbers
`etp report` computes on them), cached between calls; bad windows refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hub.report.analysis import analyse
from hub.report.inputs import load_report_input
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for


async def test_competition_over_the_recent_auctions(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path, auction_interval_ms=150)
    async with running_hub(settings) as hub:
        assert hub.auctions is not None and hub.store is not None
        key = await api_key(hub)
        url = f"{hub.http_url}/api/v1/competition"
        status, empty = await asyncio.to_thread(get_json, url + "?auctions=100", key)
        assert status == 200 and empty["available"] is False and "no recorded" in empty["reason"]
        for bad in ("?auctions=5", "?auctions=20000", "?auctions=x"):
            assert (await asyncio.to_thread(get_json, url + bad, key))[0] == 400
        totals = hub.auctions.totals
        async with sim_fleet(settings, hub.mqtt_url, count=4):
            await wait_for(lambda: totals.trades >= 12, 30, "a dozen trades")
        await hub.auctions.stop()  # nothing changes in the store from here on
        await hub.store.flush()
        status, body = await asyncio.to_thread(get_json, url + "?auctions=200", key)
        assert status == 200 and body["available"] is True, body
        assert 0 < body["cleared"] <= totals.trades and body["auctions"] <= 200  # verified only
        assert body["from_ms"] <= body["to_ms"]
        assert set(body["improvement"]) >= {"recorded_vs_single_price_per_kwh_pct",
                                            "recorded_minus_single_premium_points"}
        # the figures are the report's on the same auctions (the last 200, here all)
        report = await load_report_input(hub.store, last_auctions=200)
        expected = analyse(report, seed=settings.seed, aggregators=report.aggregators,
                           rules={"max_rounds": settings.max_rounds},
                           trading_period_ms=settings.trading_period_ms)
        assert body["auctions"] == expected.auctions
        assert body["improvement"] == expected.improvement
        assert body["premium_mean_pct"] == expected.premium_mean_pct
        again = (await asyncio.to_thread(get_json, url + "?auctions=200", key))[1]
        assert again["computed_ms"] == body["computed_ms"]  # kept for 30 s
        assert (await asyncio.to_thread(get_json, url, None))[0] == 401
