"""The competitive-pricing report: numbers, Markdown, PNG, store-backed path and CLI."""

import asyncio
import json
import struct
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.auctions.simulation import default_scenario, simulate
from hub.buyers.aggregator import cost_mc, default_aggregators
from hub.cli.main import app
from hub.report import (
    NoReportDataError,
    ReportAuction,
    ReportBid,
    ReportInput,
    analyse,
    build_report,
    from_simulation,
    write_report,
)
from hub.report.analysis import private_floors
from hub.store import Store, database_url_for
from shared_etp import schema

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 400 and height > 200
    assert data.endswith(b"IEND\xaeB`\x82")


def small_input() -> ReportInput:
    auctions = [
        ReportAuction(1, 1, "ascending", 2_000, 20_000, "cleared", 25_000, 1001, 2_000, 0),
        ReportAuction(2, 2, "ascending", 1_000, 18_000, "cleared", 18_000, 1002, 1_000, 60_000),
        ReportAuction(3, 1, "ascending", 3_000, 20_000, "no_sale", None, None, None, 120_000),
        ReportAuction(4, 3, "ascending", 1_000, 30_000, "cleared", 36_000, 1001, 500, 180_000),
        ReportAuction(5, 2, "ascending", 1_000, 18_000, "open", None, None, None, 240_000),
    ]
    return ReportInput(auctions=auctions, source="test")


def test_numbers_from_a_small_recorded_market() -> None:
    data = analyse(small_input(), seed=3)
    assert (data.auctions, data.closed, data.cleared) == (5, 4, 3)
    assert data.cleared_share == 0.75
    # premiums: 25 %, 0 %, 20 %
    assert data.premium_mean_pct == pytest.approx(15.0)
    assert data.premium_median_pct == pytest.approx(20.0)
    assert data.premium_p90_pct == pytest.approx(25.0)
    assert data.above_reserve_share == pytest.approx(2 / 3)
    revenue = cost_mc(25_000, 2_000) + cost_mc(18_000, 1_000) + cost_mc(36_000, 500)
    assert data.revenue_mc == revenue == 86_000
    assert data.energy_sold_wh == 3_500
    by_agg = {row["bidder_id"]: row for row in data.aggregators}
    assert by_agg[1001]["wins"] == 2 and by_agg[1001]["spend_mc"] == 68_000
    by_bat = {row["device_id"]: row for row in data.batteries}
    assert by_bat[1]["revenue_mc"] == 50_000 and by_bat[1]["cleared"] == 1
    assert by_bat[3]["mean_premium_pct"] == pytest.approx(20.0)
    assert data.seed == 3 and data.single["aggregator_ids"] == [
        data.counterfactual_aggregator["aggregator_id"]
    ]


def test_private_floors_are_inferred_from_price_rejections() -> None:
    auctions = [
        ReportAuction(1, 1, "ascending", 1_000, 20_000, "no_sale", None, None, None, 0),
        ReportAuction(2, 2, "ascending", 1_000, 20_000, "cleared", 26_000, 1001, 1_000, 1),
    ]
    bids = [
        ReportBid(1, 1001, 25_000, "rejected", schema.REASON_BELOW_MARKET),
        ReportBid(1, 1002, 39_000, "rejected", schema.REASON_BELOW_MARKET),
        ReportBid(1, 1003, 35_000, "rejected", schema.REASON_LOW_REPUTATION),  # not a price
        ReportBid(2, 1002, 19_000, "rejected", schema.REASON_BELOW_RESERVE),  # below announced
        ReportBid(2, 1001, 26_000, "confirmed", None),
    ]
    report = ReportInput(auctions=auctions, bids=bids)
    assert private_floors(report) == {1: 39_001}
    data = analyse(report, seed=2)
    assert data.private_floors == 1
    # the replay keeps auction 1 unsold: its floor is above every aggregator's max price
    assert data.competitive["cleared"] == 1


def test_report_of_the_three_aggregator_scenario_shows_the_improvement(tmp_path: Path) -> None:
    seed = 42
    aggregators = default_aggregators(3, seed)
    result = simulate(default_scenario(seed), aggregators)
    report = build_report(from_simulation(result), tmp_path, seed=seed, aggregators=aggregators)

    assert report.markdown_path == tmp_path / "report.md"
    assert_valid_png(report.chart_path)
    data = report.data
    assert data.premium_mean_pct > 5.0
    assert data.improvement["recorded_vs_single_price_per_kwh_pct"] > 0  # type: ignore[operator]
    assert data.improvement["simulated_vs_single_revenue_pct"] > 0  # type: ignore[operator]
    # replaying the simulated offers with the same aggregators and seed reproduces them
    assert data.competitive["revenue_mc"] == result.revenue_mc == data.revenue_mc
    md = report.markdown_path.read_text()
    assert md == report.markdown
    assert f"{data.premium_mean_pct:.1f} %" in md
    assert f"{data.revenue_per_kwh_mc / 1000:.2f} c/kWh" in md
    assert f"{data.single['revenue_per_kwh_mc'] / 1000:.2f} c/kWh" in md
    assert "seed: **42**" in md and "![" in md and "report.png" in md
    assert json.loads(report.as_json())["cleared"] == data.cleared


def test_cli_simulate_reports_without_recorded_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["report", "--simulate", "--data-dir", str(tmp_path), "--seed", "9", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["seed"] == 9 and payload["source"].startswith("simulation")
    assert payload["premium_mean_pct"] > 5
    assert payload["improvement"]["simulated_vs_single_price_per_kwh_pct"] > 0
    assert_valid_png(tmp_path / "report" / "report.png")


def test_no_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(NoReportDataError, match="run `etp hub"):
        write_report(tmp_path)
    with pytest.raises(NoReportDataError, match="no recorded auctions"):
        analyse(ReportInput(auctions=[]), seed=1)
    result = CliRunner().invoke(app, ["report", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no hub database" in result.output
    assert "Traceback" not in result.output


async def _record(data_dir: Path, seed: int) -> int:
    """Put a simulated market into a real store, the way the hub records it, plus one trade
    its battery never proved (the returned revenue does not include it)."""
    result = simulate(default_scenario(seed, batteries=4), default_aggregators(3, seed))
    store = Store(database_url_for(data_dir))
    await store.start()
    try:
        for outcome in result.outcomes:
            auction_id = await store.open_auction(
                device_id=outcome.device_id,
                site="site1",
                mechanism="ascending",
                lot_wh=outcome.lot_wh,
                reserve_mc=outcome.reserve_mc,
                opened_ms=1_700_000_000_000 + outcome.opened_ms + outcome.device_id,
            )
            for bidder in outcome.bidder_ids:
                store.record_bid(
                    auction_id=auction_id,
                    bidder_id=bidder,
                    price_mc=outcome.reserve_mc,
                    energy_wh=outcome.lot_wh,
                    round=1,
                    outcome="accepted",
                    reason=None,
                    ts_ms=1_700_000_000_000,
                )
            if outcome.sold:
                assert outcome.clearing_price_mc is not None and outcome.winner_id is not None
                await store.record_trade(
                    auction_id=auction_id,
                    device_id=outcome.device_id,
                    bidder_id=outcome.winner_id,
                    price_mc=outcome.clearing_price_mc,
                    energy_wh=outcome.energy_wh,
                    reserve_mc=outcome.reserve_mc,
                    confirmed_ms=1_700_000_000_000,
                )
                await store.close_auction(
                    auction_id,
                    status="cleared",
                    clearing_price_mc=outcome.clearing_price_mc,
                    winner_id=outcome.winner_id,
                    energy_wh=outcome.energy_wh,
                    closed_ms=1_700_000_000_001,
                    trade_status="verified",  # its battery acknowledged the confirm
                )
            else:
                await store.close_auction(auction_id, status="no_sale", closed_ms=1_700_000_000_001)
        # A trade its battery never proved (confirm unanswered): it earns nobody anything.
        last = result.outcomes[-1]
        auction_id = await store.open_auction(
            device_id=last.device_id, site="site1", mechanism="ascending", lot_wh=last.lot_wh,
            reserve_mc=last.reserve_mc, opened_ms=1_700_000_900_000,
        )
        await store.record_trade(
            auction_id=auction_id, device_id=last.device_id, bidder_id=100_001,
            price_mc=99_000, energy_wh=last.lot_wh, reserve_mc=last.reserve_mc,
            confirmed_ms=1_700_000_900_001,
        )
        await store.close_auction(
            auction_id, status="cleared", clearing_price_mc=99_000, winner_id=100_001,
            energy_wh=last.lot_wh, closed_ms=1_700_000_900_002, trade_status="unverified",
        )
        await store.flush()
    finally:
        await store.close()
    return result.revenue_mc


def test_report_from_the_store_via_the_cli(tmp_path: Path) -> None:
    revenue = asyncio.run(_record(tmp_path, seed=5))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(
        app, ["report", "--data-dir", str(tmp_path), "--out", str(out), "--seed", "5", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["revenue_mc"] == revenue
    assert payload["seed"] == 5 and payload["source"] == "store"
    assert payload["premium_mean_pct"] > 0
    assert payload["improvement"]["recorded_vs_single_price_per_kwh_pct"] > 0
    assert {row["bidder_id"] for row in payload["aggregators"]} == {100_001, 100_002, 100_003}
    assert_valid_png(out / "report.png")
    assert "Competition vs a single aggregator" in (out / "report.md").read_text()
    # default output dir and Markdown on stdout
    result = runner.invoke(app, ["report", "--data-dir", str(tmp_path), "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "# ETP competitive-pricing report" in result.stdout
    assert (tmp_path / "report" / "report.md").exists()
