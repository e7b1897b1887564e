"""GET /metrics: Prometheus text format 0.0.4 from a running hub trading with a simulated
fleet — parses, families typed, counters grow, histograms cumulative, labels escaped, 401
without a key."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hub.buyers.aggregator import default_aggregators
from hub.gateway.prometheus import Exposition, escape_label_value
from hub.metrics import LatencyHistogram
from tests.hub.helpers import api_key, hub_settings, running_hub, sim_fleet, wait_for

# A name an operator may well type; every character the format must escape is in it.
AWKWARD_NAME = 'Back\\slash "quoted"\nsecond line'


@dataclass
class Family:
    """One metric family as parsed: its TYPE, HELP and samples (name, labels, value)."""

    kind: str
    help_text: str = ""
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE_HEAD = re.compile(rf"({_NAME})(\{{)?")
_SUFFIXES = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}


def _parse_labels(text: str, start: int) -> tuple[dict[str, str], int]:
    """Labels from just after `{` to just after the closing `}`, unescaping values."""
    labels: dict[str, str] = {}
    pos = start
    while text[pos] != "}":
        match = re.compile(rf"({_NAME})=\"").match(text, pos)
        assert match, f"bad label at {pos}: {text!r}"
        pos = match.end()
        value: list[str] = []
        while text[pos] != '"':
            if text[pos] == "\\":
                escaped = text[pos + 1]
                assert escaped in '\\"n', f"bad escape \\{escaped} in {text!r}"
                value.append("\n" if escaped == "n" else escaped)
                pos += 2
            else:
                assert text[pos] != "\n"
                value.append(text[pos])
                pos += 1
        assert match.group(1) not in labels, f"label repeated in {text!r}"
        labels[match.group(1)] = "".join(value)
        pos += 1
        if text[pos] == ",":
            pos += 1
    return labels, pos + 1


def _family_of(sample_name: str, families: dict[str, Family]) -> str:
    if sample_name in families and families[sample_name].kind != "histogram":
        return sample_name
    for base, family in families.items():
        for suffix in _SUFFIXES.get(family.kind, ()):
            if suffix and sample_name == base + suffix:
                return base
    raise AssertionError(f"sample {sample_name} has no TYPE line before it")


def parse_exposition(text: str) -> dict[str, Family]:
    """A strict reader of the text format 0.0.4: HELP then TYPE once per family, before its
    samples; every sample's family declared; values as Go's ParseFloat reads them."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    helps: dict[str, str] = {}
    for line in text.rstrip("\n").split("\n"):
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"HELP twice for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, kind = line[7:].split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            assert name not in families, f"TYPE twice for {name}"
            families[name] = Family(kind, helps.get(name, ""))
        else:
            assert not line.startswith("#") and line, f"unexpected line {line!r}"
            head = _SAMPLE_HEAD.match(line)
            assert head, f"bad sample {line!r}"
            labels, pos = ({}, head.end(1))
            if head.group(2):
                labels, pos = _parse_labels(line, head.end())
            assert line[pos] == " ", f"no space before the value in {line!r}"
            value_text = line[pos + 1:]
            value = {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}.get(value_text)
            if value is None:
                value = float(value_text)
            name = head.group(1)
            families[_family_of(name, families)].samples.append((name, labels, value))
    return families


def values(family: Family, name: str | None = None) -> dict[tuple[tuple[str, str], ...], float]:
    """{sorted labels: value} of a family's samples (of one sample name)."""
    return {
        tuple(sorted(labels.items())): value
        for sample, labels, value in family.samples
        if name is None or sample == name
    }


def check_histograms(name: str, family: Family) -> None:
    """Per label set: le bounds rising to +Inf, cumulative counts, +Inf == _count."""
    assert family.kind == "histogram"
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    for sample, labels, value in family.samples:
        if sample == name + "_bucket":
            rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
            series.setdefault(rest, []).append((float(labels["le"]), value))
    counts = values(family, name + "_count")
    sums = values(family, name + "_sum")
    assert set(series) == set(counts) == set(sums)
    for labels, buckets in series.items():
        bounds = [bound for bound, _ in buckets]
        assert bounds == sorted(bounds) and len(set(bounds)) == len(bounds)
        assert bounds[-1] == math.inf
        cumulative = [count for _, count in buckets]
        assert cumulative == sorted(cumulative), f"{name}{labels} buckets not cumulative"
        assert cumulative[-1] == counts[labels], f"{name}{labels}: +Inf != _count"
        assert sums[labels] >= 0


def test_label_values_escaped_and_read_back() -> None:
    out = Exposition()
    out.counter("etp_things_total", "Things, with a \\ and a\nline feed.",
                [({"name": AWKWARD_NAME}, 3), ({"name": "plain"}, 0)])
    text = out.text()
    assert 'name="Back\\\\slash \\"quoted\\"\\nsecond line"} 3' in text
    assert "# HELP etp_things_total Things, with a \\\\ and a\\nline feed.\n" in text
    family = parse_exposition(text)["etp_things_total"]
    assert values(family) == {(("name", AWKWARD_NAME),): 3, (("name", "plain"),): 0}
    assert escape_label_value("a\\b") == "a\\\\b"
    with pytest.raises(ValueError, match="_total"):
        out.counter("etp_things", "no suffix", [])


def test_histogram_buckets_are_cumulative_with_inf_equal_to_count() -> None:
    hist = LatencyHistogram()
    for latency_ms in (0.5, 1.0, 1.5, 7, 7, 150, 2000, 2000.5, 90_000):
        hist.add(latency_ms)
    out = Exposition()
    out.histogram("etp_x_seconds", "x", [({"type": "bid"}, hist)])
    family = parse_exposition(out.text())["etp_x_seconds"]
    check_histograms("etp_x_seconds", family)
    buckets = {dict(k)["le"]: v for k, v in values(family, "etp_x_seconds_bucket").items()}
    # le is inclusive: 1.0 ms is in the 0.001 s bucket, 2000 ms in the 2 s one
    assert buckets["0.001"] == 2 and buckets["0.002"] == 3 and buckets["0.01"] == 5
    assert buckets["2.0"] == 7 and buckets["+Inf"] == 9
    assert values(family, "etp_x_seconds_sum") == {(("type", "bid"),): pytest.approx(94.1675)}


def _scrape(url: str, key: str | None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["content-type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["content-type"], exc.read().decode()


EXPECTED_TYPES = {
    "etp_ready": "gauge",
    "etp_auctions_opened_total": "counter",
    "etp_auctions_total": "counter",
    "etp_auctions_open": "gauge",
    "etp_trades_total": "counter",
    "etp_trades_void_total": "counter",
    "etp_trades_unverified": "gauge",
    "etp_revenue_millicents_total": "counter",
    "etp_clearing_price_last_millicents_per_kwh": "gauge",
    "etp_clearing_price_median_millicents_per_kwh": "gauge",
    "etp_premium_over_reserve_mean_percent": "gauge",
    "etp_aggregator_wins_total": "counter",
    "etp_batteries_known": "gauge",
    "etp_batteries_online": "gauge",
    "etp_request_latency_seconds": "histogram",
    "etp_deadline_misses_total": "counter",
    "etp_rejected_frames_total": "counter",
    "etp_event_log_last_seq": "gauge",
    "etp_store_pending_rows": "gauge",
    "etp_store_events_written_total": "counter",
    "etp_http_refused_total": "counter",
    "etp_ws_clients": "gauge",
    "etp_event_loop_lag_seconds": "histogram",
}


async def test_metrics_of_a_trading_hub(tmp_path: Path) -> None:
    configs = default_aggregators(3)
    configs[0] = dataclasses.replace(configs[0], name=AWKWARD_NAME)
    settings = hub_settings(tmp_path)
    async with running_hub(settings, aggregator_configs=configs) as hub:
        url = hub.http_url + "/metrics"
        assert (await asyncio.to_thread(_scrape, url, None))[0] == 401
        assert (await asyncio.to_thread(_scrape, url, "etp_1_wrong"))[0] == 401
        key = await api_key(hub)
        async with sim_fleet(settings, hub.mqtt_url, count=4):
            assert hub.auctions is not None
            engine = hub.auctions
            await wait_for(lambda: engine.totals.trades >= 3, 30, "3 trades")
            code, content_type, first_text = await asyncio.to_thread(_scrape, url, key)
            seen = engine.totals.trades
            await wait_for(lambda: engine.totals.trades >= seen + 3, 30, "3 more trades")
            code2, _, second_text = await asyncio.to_thread(_scrape, url, key)
    assert code == code2 == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    first, second = parse_exposition(first_text), parse_exposition(second_text)

    for name, kind in EXPECTED_TYPES.items():
        assert first[name].kind == kind, name
    for name, family in first.items():
        assert family.help_text, f"{name} has no HELP"
        assert (family.kind == "counter") == name.endswith("_total"), name

    # trading shows: verified trades, revenue, prices, batteries, protocol latency
    def one(families: dict[str, Family], name: str) -> float:
        return values(families[name])[()]

    assert one(first, "etp_trades_total") >= 3
    assert one(second, "etp_trades_total") >= one(first, "etp_trades_total") + 3
    assert one(second, "etp_revenue_millicents_total") > one(first, "etp_revenue_millicents_total")
    assert one(first, "etp_clearing_price_last_millicents_per_kwh") > 0
    assert one(first, "etp_clearing_price_median_millicents_per_kwh") > 0
    assert one(first, "etp_batteries_known") == 4 and one(first, "etp_batteries_online") == 4
    assert one(second, "etp_event_log_last_seq") > one(first, "etp_event_log_last_seq")
    outcomes = values(first["etp_auctions_total"])
    assert set(outcomes) == {(("outcome", o),) for o in ("cleared", "no_sale", "terminated")}
    assert outcomes[(("outcome", "cleared"),)] >= 3
    latency_types = {dict(k).get("type") for k in values(first["etp_request_latency_seconds"])}
    assert {"query", "bid", "bid_confirm"} <= latency_types
    misses = {dict(k)["type"] for k in values(first["etp_deadline_misses_total"])}
    assert latency_types <= misses  # a 0 series for each request type seen
    assert one(first, "etp_ready") == 1
    for name in ("etp_request_latency_seconds", "etp_event_loop_lag_seconds",
                 "etp_store_write_latency_seconds"):
        check_histograms(name, first[name])
        check_histograms(name, second[name])

    # the awkward aggregator name came through escaped and reads back unchanged
    names = {dict(k)["name"] for k in values(first["etp_aggregator_wins_total"])}
    assert AWKWARD_NAME in names
    assert '"Back\\\\slash \\"quoted\\"\\nsecond line"' in first_text

    # counters (and histogram buckets, sums and counts) never go down between scrapes
    def by_sample(family: Family) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {(sample, tuple(sorted(labels.items()))): value
                for sample, labels, value in family.samples}

    for name, family in first.items():
        if family.kind not in ("counter", "histogram"):
            continue
        later = by_sample(second[name])
        for sample, value in by_sample(family).items():
            assert later.get(sample, -1) >= value, f"{sample} went down"
