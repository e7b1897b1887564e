"""Competitive-pricing analysis: recorded prices vs reserve and the single-buyer counterfactual."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import median
from typing import Any

from hub.auctions.rules import Mechanism, Offer
from hub.auctions.simulation import Scenario, SimResult, best_funded, simulate
from hub.buyers.aggregator import AggregatorConfig, default_aggregators
from hub.report.inputs import ReportInput
from shared_etp import schema

__all__ = ["NoReportDataError", "ReportData", "analyse", "percentile", "private_floors"]


class NoReportDataError(LookupError):
    """There is nothing to report on (no recorded auctions)."""


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (`fraction` in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return float(ordered[rank - 1])


def _pct_change(new: float, base: float) -> float | None:
    return (new - base) * 100.0 / base if base else None


@dataclass
class ReportData:
    """Every number the report prints, plus the series the chart draws."""

    source: str
    seed: int
    mechanism: str
    auctions: int
    closed: int
    cleared: int
    cleared_share: float
    energy_sold_wh: int
    revenue_mc: int
    revenue_per_kwh_mc: float
    mean_reserve_mc: float
    mean_clearing_mc: float
    premium_mean_pct: float
    premium_median_pct: float
    premium_p90_pct: float
    above_reserve_share: float
    aggregators: list[dict[str, Any]]
    batteries: list[dict[str, Any]]
    counterfactual_aggregator: dict[str, Any]
    private_floors: int  # auctions whose battery revealed a private floor above its reserve
    competitive: dict[str, Any]  # simulation with every aggregator on the recorded offers
    single: dict[str, Any]  # simulation with only the best-funded aggregator
    improvement: dict[str, float | None]
    series: list[tuple[int, int, int | None]] = field(
        default_factory=list
    )  # (t ms, reserve, price)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (JSON-friendly) without the chart series."""
        data = dict(self.__dict__)
        data.pop("series")
        return data


def _offers(report: ReportInput) -> list[Offer]:
    """Recorded auctions that actually put a lot up for sale, as offers (same ids, times)."""
    return [
        Offer(
            device_id=a.device_id,
            auction_id=a.id,
            lot_wh=a.lot_wh,
            reserve_mc=a.reserve_mc,
            opened_ms=a.opened_ms,
        )
        for a in report.auctions
        if a.lot_wh > 0 and a.status != "open"
    ]


PRICE_FLOOR_REASONS = (schema.REASON_BELOW_RESERVE, schema.REASON_BELOW_MARKET)


def private_floors(report: ReportInput) -> dict[int, int]:
    """Per auction, the battery's private floor as the recorded rejections reveal it: one above
    the highest bid it refused as below reserve / below market (only where that is above the
    announced reserve). The replay applies it so simulated batteries refuse what real ones did."""
    reserves = {a.id: a.reserve_mc for a in report.auctions}
    floors: dict[int, int] = {}
    for bid in report.bids:
        if bid.outcome != "rejected" or bid.reason not in PRICE_FLOOR_REASONS:
            continue
        floor = bid.price_mc + 1
        if floor > reserves.get(bid.auction_id, 0) and floor > floors.get(bid.auction_id, 0):
            floors[bid.auction_id] = floor
    return floors


def analyse(
    report: ReportInput,
    *,
    seed: int,
    aggregators: Sequence[AggregatorConfig] | None = None,
    rules: dict[str, int] | None = None,
    trading_period_ms: int = 0,
) -> ReportData:
    """Compute the report. The counterfactual replays the recorded offers (lots, reserves,
    times) through `simulate` twice: with every aggregator (`aggregators`, default: as many
    default aggregators as bidders were recorded, from `seed`) and with only the best-funded."""
    if not report.auctions:
        raise NoReportDataError(
            "no recorded auctions: run `etp hub` or `etp demo` first so there is data to report"
        )
    auctions = report.auctions
    closed = [a for a in auctions if a.status != "open"]
    cleared = [a for a in auctions if a.cleared]
    premiums = [p for a in cleared if (p := a.premium_pct) is not None]
    energy = sum(a.energy_wh or 0 for a in cleared)
    revenue = sum(a.revenue_mc for a in cleared)
    mechanism = Counter(a.mechanism for a in auctions).most_common(1)[0][0]
    if mechanism not in {m.value for m in Mechanism}:
        mechanism = Mechanism.ASCENDING.value  # unknown label in old data: replay as ascending

    # Per aggregator: auctions bid in, wins, spend.
    bid_in: dict[int, set[int]] = {}
    for bid in report.bids:
        bid_in.setdefault(bid.bidder_id, set()).add(bid.auction_id)
    per_agg: dict[int, dict[str, Any]] = {}
    for bidder in report.bidder_ids():
        per_agg[bidder] = {
            "bidder_id": bidder,
            "auctions_bid": 0,
            "wins": 0,
            "spend_mc": 0,
            "energy_wh": 0,
        }
    for a in cleared:
        if a.winner_id is None:
            continue
        row = per_agg[a.winner_id]
        row["wins"] += 1
        row["spend_mc"] += a.revenue_mc
        row["energy_wh"] += a.energy_wh or 0
        bid_in.setdefault(a.winner_id, set()).add(a.id)
    for bidder, row in per_agg.items():
        row["auctions_bid"] = len(bid_in.get(bidder, set()))
        row["success_rate"] = (
            round(row["wins"] / row["auctions_bid"], 4) if row["auctions_bid"] else 0.0
        )

    # Per battery: revenue and premium.
    per_bat: dict[int, dict[str, Any]] = {}
    for a in auctions:
        row = per_bat.setdefault(
            a.device_id,
            {
                "device_id": a.device_id,
                "auctions": 0,
                "cleared": 0,
                "energy_wh": 0,
                "revenue_mc": 0,
                "_premiums": [],
            },
        )
        row["auctions"] += 1
        if a.cleared:
            row["cleared"] += 1
            row["energy_wh"] += a.energy_wh or 0
            row["revenue_mc"] += a.revenue_mc
            if a.premium_pct is not None:
                row["_premiums"].append(a.premium_pct)
    batteries = []
    for device_id in sorted(per_bat):
        row = per_bat[device_id]
        values = row.pop("_premiums")
        row["mean_premium_pct"] = round(sum(values) / len(values), 3) if values else None
        batteries.append(row)

    # Counterfactual on the same offers and seed.
    configs = (
        list(aggregators)
        if aggregators
        else default_aggregators(max(1, len(report.bidder_ids()) or 3), seed)
    )
    scenario = Scenario(
        seed=seed,
        mechanism=Mechanism(mechanism),
        offers=_offers(report),
        rules=dict(rules or {}) if Mechanism(mechanism) is Mechanism.ASCENDING else {},
        private_reserve_mc=private_floors(report),
        trading_period_ms=trading_period_ms,
    )
    competitive: SimResult = simulate(scenario, configs)
    lone = best_funded(configs)
    single: SimResult = simulate(scenario, [lone])

    recorded_per_kwh = revenue * 1000 / energy if energy else 0.0
    improvement = {
        "recorded_vs_single_price_per_kwh_pct": _pct_change(
            recorded_per_kwh, single.revenue_per_kwh_mc
        ),
        "recorded_vs_single_revenue_pct": _pct_change(revenue, single.revenue_mc),
        "recorded_minus_single_premium_points": (
            (sum(premiums) / len(premiums) if premiums else 0.0) - single.mean_premium_pct
        ),
        "simulated_vs_single_price_per_kwh_pct": _pct_change(
            competitive.revenue_per_kwh_mc, single.revenue_per_kwh_mc
        ),
        "simulated_vs_single_revenue_pct": _pct_change(competitive.revenue_mc, single.revenue_mc),
    }
    return ReportData(
        source=report.source,
        seed=seed,
        mechanism=mechanism,
        auctions=len(auctions),
        closed=len(closed),
        cleared=len(cleared),
        cleared_share=len(cleared) / len(closed) if closed else 0.0,
        energy_sold_wh=energy,
        revenue_mc=revenue,
        revenue_per_kwh_mc=recorded_per_kwh,
        mean_reserve_mc=sum(a.reserve_mc for a in cleared) / len(cleared) if cleared else 0.0,
        mean_clearing_mc=(
            sum(a.clearing_price_mc or 0 for a in cleared) / len(cleared) if cleared else 0.0
        ),
        premium_mean_pct=sum(premiums) / len(premiums) if premiums else 0.0,
        premium_median_pct=float(median(premiums)) if premiums else 0.0,
        premium_p90_pct=percentile(premiums, 0.9) if premiums else 0.0,
        above_reserve_share=(
            sum(1 for p in premiums if p > 0) / len(premiums) if premiums else 0.0
        ),
        aggregators=[per_agg[k] for k in sorted(per_agg)],
        batteries=batteries,
        counterfactual_aggregator={
            "aggregator_id": lone.aggregator_id,
            "name": lone.name,
            "strategy": lone.strategy,
            "budget_mc": lone.budget_mc,
            "reason": "largest budget (ties: lowest id): the buyer best able to take the "
            "whole supply alone",
        },
        private_floors=len(scenario.private_reserve_mc),
        competitive=competitive.summary(),
        single=single.summary(),
        improvement=improvement,
        series=[
            (a.opened_ms, a.reserve_mc, a.clearing_price_mc if a.cleared else None)
            for a in auctions
        ],
    )
