"""Writes the competitive-pricing report: `report.md` (Markdown) and `report.png` (chart)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hub.buyers.aggregator import AggregatorConfig
from hub.legacy.bridge import LEGACY_DEVICE_IDS, is_legacy_device
from hub.report.analysis import NoReportDataError, ReportData, analyse
from hub.report.inputs import ReportInput, load_report_input

__all__ = ["ReportResult", "build_report", "render_markdown", "write_chart", "write_report"]

MARKDOWN_NAME = "report.md"
CHART_NAME = "report.png"


@dataclass
class ReportResult:
    """Where the report went and what it says."""

    markdown: str
    markdown_path: Path
    chart_path: Path
    data: ReportData

    def as_json(self) -> str:
        """The report's numbers as JSON (plus the file paths)."""
        payload = self.data.as_dict()
        payload["markdown_path"] = str(self.markdown_path)
        payload["chart_path"] = str(self.chart_path)
        return json.dumps(payload, indent=2, sort_keys=True)


def _c(mc: float | None) -> str:
    """mc/kWh as c/kWh with two decimals."""
    return "—" if mc is None else f"{mc / 1000:.2f}"


def _money(mc: float) -> str:
    """Milli-cents as currency units (1 unit = 100 c = 100 000 mc)."""
    return f"{mc / 100_000:,.2f}"


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.1f} %" if signed else f"{value:.1f} %"


def render_markdown(data: ReportData, chart_name: str = CHART_NAME) -> str:
    """The report as Markdown: summary, price vs reserve, counterfactual, tables, chart."""
    comp, single, imp = data.competitive, data.single, data.improvement
    lone = data.counterfactual_aggregator
    lines = [
        "# ETP competitive-pricing report",
        "",
        f"Source: {data.source} · mechanism: `{data.mechanism}` · counterfactual seed: "
        f"**{data.seed}**. Prices in cents/kWh, money in currency units (100 cents).",
        "",
        "## Market summary",
        "",
        "| auctions | closed | cleared | cleared share | energy sold | revenue to owners | "
        "avg price |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {data.auctions} | {data.closed} | {data.cleared} | {data.cleared_share * 100:.1f} % | "
        f"{data.energy_sold_wh / 1000:.2f} kWh | {_money(data.revenue_mc)} | "
        f"{_c(data.revenue_per_kwh_mc)} c/kWh |",
        "",
        "## Clearing price vs reserve",
        "",
        f"- Mean reserve of cleared lots: **{_c(data.mean_reserve_mc)} c/kWh**; mean clearing "
        f"price: **{_c(data.mean_clearing_mc)} c/kWh**.",
        f"- Premium over reserve: mean **{_pct(data.premium_mean_pct)}**, median "
        f"**{_pct(data.premium_median_pct)}**, p90 **{_pct(data.premium_p90_pct)}**.",
        f"- Cleared strictly above reserve: {data.above_reserve_share * 100:.1f} % of sales.",
        "",
        "## Competition vs a single aggregator (counterfactual)",
        "",
        "The recorded offers (same lots, reserves and times) were replayed through the market "
        f"simulation with seed {data.seed}: once with every aggregator, once with only "
        f"**{lone['name']}** (id {lone['aggregator_id']}, `{lone['strategy']}`), chosen as the "
        f"{lone['reason']}. Simulated batteries apply the announced reserve and, in "
        f"{data.private_floors} auctions, the private floor their real battery revealed by "
        "refusing bids as below reserve / below market.",
        "",
        "| run | cleared | energy sold | revenue to owners | avg price | mean premium |",
        "|---|---:|---:|---:|---:|---:|",
        f"| observed | {data.cleared} | {data.energy_sold_wh / 1000:.2f} kWh | "
        f"{_money(data.revenue_mc)} | {_c(data.revenue_per_kwh_mc)} c/kWh | "
        f"{_pct(data.premium_mean_pct)} |",
        f"| simulated, {len(comp['aggregator_ids'])} aggregators | {comp['cleared']} | "
        f"{comp['energy_sold_wh'] / 1000:.2f} kWh | {_money(comp['revenue_mc'])} | "
        f"{_c(comp['revenue_per_kwh_mc'])} c/kWh | {_pct(comp['mean_premium_pct'])} |",
        f"| simulated, single aggregator | {single['cleared']} | "
        f"{single['energy_sold_wh'] / 1000:.2f} kWh | {_money(single['revenue_mc'])} | "
        f"{_c(single['revenue_per_kwh_mc'])} c/kWh | {_pct(single['mean_premium_pct'])} |",
        "",
        "`observed` is the market this report reads (the store, or a simulation). The single "
        "aggregator buys only up to its own energy requirement and budget; lots it leaves "
        "unsold earn their owners nothing, which the revenue figures include.",
        "",
        "Price improvement for battery owners over the single-aggregator counterfactual:",
        "",
        f"- observed market: **{_pct(imp['recorded_vs_single_price_per_kwh_pct'], True)}** "
        f"per kWh, {_pct(imp['recorded_vs_single_revenue_pct'], True)} revenue, "
        f"{imp['recorded_minus_single_premium_points']:+.1f} premium points;",
        f"- simulated competition: "
        f"**{_pct(imp['simulated_vs_single_price_per_kwh_pct'], True)}** per kWh, "
        f"{_pct(imp['simulated_vs_single_revenue_pct'], True)} revenue.",
        "",
        "## Aggregators",
        "",
        "| aggregator | auctions bid | wins | success rate | energy | spend |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data.aggregators:
        lines.append(
            f"| {row['bidder_id']} | {row['auctions_bid']} | {row['wins']} | "
            f"{row['success_rate'] * 100:.1f} % | {row['energy_wh'] / 1000:.2f} kWh | "
            f"{_money(row['spend_mc'])} |"
        )
    lines += [
        "",
        "## Batteries",
        "",
        "| battery | auctions | cleared | energy sold | revenue | mean premium |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in data.batteries:
        name = f"{row['device_id']} (legacy)" if is_legacy_device(row["device_id"]) else (
            str(row["device_id"]))
        lines.append(
            f"| {name} | {row['auctions']} | {row['cleared']} | "
            f"{row['energy_wh'] / 1000:.2f} kWh | {_money(row['revenue_mc'])} | "
            f"{_pct(row['mean_premium_pct'])} |"
        )
    legacy = [row for row in data.batteries if is_legacy_device(row["device_id"])]
    if legacy:
        lines += [
            "",
            f"Legacy batteries (Go prototype, through `etp legacy bridge`; ids "
            f"{LEGACY_DEVICE_IDS.start}-{LEGACY_DEVICE_IDS.stop - 1}): {len(legacy)}, "
            f"{sum(row['cleared'] for row in legacy)} trades, "
            f"{sum(row['energy_wh'] for row in legacy) / 1000:.2f} kWh, "
            f"{_money(sum(row['revenue_mc'] for row in legacy))}.",
        ]
    lines += ["", f"![clearing price vs reserve, and improvement]({chart_name})", ""]
    return "\n".join(lines)


def write_chart(data: ReportData, path: Path) -> Path:
    """PNG: clearing price vs reserve over time (left) and average price by run (right)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), width_ratios=(3, 2))
    try:
        start = min(t for t, _, _ in data.series) if data.series else 0
        span_ms = max((t for t, _, _ in data.series), default=start) - start
        unit_ms, unit = (1_000, "seconds") if span_ms < 120_000 else (60_000, "minutes")
        minutes = [(t - start) / unit_ms for t, _, _ in data.series]
        left.plot(
            minutes, [r / 1000 for _, r, _ in data.series], ".", color="#888888", label="reserve"
        )
        sold = [
            (m, p / 1000)
            for m, (_, _, p) in zip(minutes, data.series, strict=True)
            if p is not None
        ]
        if sold:
            cleared_rows = [
                (m, r / 1000, p / 1000)
                for m, (_, r, p) in zip(minutes, data.series, strict=True)
                if p is not None
            ]
            left.vlines(
                [m for m, _, _ in cleared_rows],
                [r for _, r, _ in cleared_rows],
                [p for _, _, p in cleared_rows],
                color="#1f77b4",
                alpha=0.25,
                linewidth=1,
            )
            left.plot(
                [m for m, _ in sold],
                [p for _, p in sold],
                "o",
                color="#1f77b4",
                markersize=4,
                label="clearing price",
            )
        left.set_xlabel(f"{unit} since first auction")
        left.set_ylabel("c/kWh")
        left.set_title("Clearing price vs reserve")
        left.legend(loc="best")
        left.grid(alpha=0.3)

        labels = ["reserve", "single\naggregator", "simulated\ncompetition", "observed"]
        values = [
            data.mean_reserve_mc / 1000,
            data.single["revenue_per_kwh_mc"] / 1000,
            data.competitive["revenue_per_kwh_mc"] / 1000,
            data.revenue_per_kwh_mc / 1000,
        ]
        bars = right.bar(labels, values, color=["#888888", "#d62728", "#2ca02c", "#1f77b4"])
        for bar, value in zip(bars, values, strict=True):
            right.annotate(
                f"{value:.2f}",
                (bar.get_x() + bar.get_width() / 2, value),
                ha="center",
                va="bottom",
                fontsize=9,
            )
        right.set_ylabel("average price, c/kWh")
        right.set_title("Price improvement vs single aggregator")
        right.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path


def build_report(
    report: ReportInput,
    out_dir: Path,
    *,
    seed: int,
    aggregators: Sequence[AggregatorConfig] | None = None,
    rules: dict[str, int] | None = None,
    trading_period_ms: int = 0,
) -> ReportResult:
    """Analyse `report` and write `report.md` + `report.png` into `out_dir`."""
    data = analyse(
        report,
        seed=seed,
        aggregators=aggregators,
        rules=rules,
        trading_period_ms=trading_period_ms,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    chart = write_chart(data, out_dir / CHART_NAME)
    markdown = render_markdown(data, chart.name)
    md_path = out_dir / MARKDOWN_NAME
    md_path.write_text(markdown, encoding="utf-8")
    return ReportResult(markdown=markdown, markdown_path=md_path, chart_path=chart, data=data)


async def _read_store(database_url: str) -> ReportInput:
    from hub.store import Store

    store = Store(database_url)
    await store.start()
    try:
        return await load_report_input(store)
    finally:
        await store.close()


def _sqlite_file(database_url: str) -> Path | None:
    prefix = "sqlite+aiosqlite:///"
    if database_url.startswith(prefix):
        return Path(database_url[len(prefix) :])
    return None


def write_report(
    data_dir: Path,
    out_dir: Path | None = None,
    *,
    seed: int = 1,
    aggregators: Sequence[AggregatorConfig] | None = None,
    rules: dict[str, int] | None = None,
    database_url: str | None = None,
    trading_period_ms: int = 0,
    prefer_recorded: bool = True,
) -> ReportResult:
    """Read the hub's store in `data_dir` (or `database_url`) and write the report to `out_dir`
    (default `data_dir/report/`). The counterfactual replays the aggregators the hub recorded
    in its event log when there are any and `prefer_recorded`, else `aggregators`. Raises
    NoReportDataError when nothing was recorded."""
    data_dir = Path(data_dir)
    from hub.store.urls import resolve_database_url

    url = resolve_database_url(database_url, data_dir)
    sqlite_path = _sqlite_file(url)
    if sqlite_path is not None and not sqlite_path.exists():
        raise NoReportDataError(
            f"no hub database at {sqlite_path}: run `etp hub --data-dir {data_dir}` or "
            f"`etp demo --data-dir {data_dir}` first"
        )
    report = asyncio.run(_read_store(url))
    if not report.auctions:
        raise NoReportDataError(
            f"the database {sqlite_path or url} holds no auctions yet: let the hub trade first"
        )
    if prefer_recorded and report.aggregators:
        aggregators = report.aggregators
    return build_report(
        report,
        out_dir or data_dir / "report",
        seed=seed,
        aggregators=aggregators,
        rules=rules,
        trading_period_ms=trading_period_ms,
    )
