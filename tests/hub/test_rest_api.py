"""The REST resources of a running hub with a viewer key: every list endpoint, its filters,
cursor pages and 400s, 401 without a key, the OpenAPI schema, streamed CSV exports, live
batteries and aggregators, and (slow, printed) list latency with 100,000 trades stored."""

from __future__ import annotations

import asyncio
import csv
import http.client
import io
import statistics
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from hub.auth import Role
from hub.runtime import HubRuntime
from hub.tools.bench.seed import SEED_STATUSES as STATUSES
from hub.tools.bench.seed import add_trades
from tests.hub.helpers import api_key, get_json, hub_settings, running_hub, sim_fleet, wait_for

LISTS = (
    "/api/v1/batteries", "/api/v1/aggregators", "/api/v1/auctions", "/api/v1/trades",
    "/api/v1/settlements", "/api/v1/events", "/api/v1/metrics",
)
EXPORTS = ("/api/v1/trades.csv", "/api/v1/auctions.csv", "/api/v1/events.csv")


def _url(hub: HubRuntime, path: str, **params: Any) -> str:
    query = urllib.parse.urlencode(
        {name: value for name, value in params.items() if value is not None}, doseq=True
    )
    return f"{hub.http_url}{path}" + (f"?{query}" if query else "")


async def _get(hub: HubRuntime, key: str | None, path: str, **params: Any) -> tuple[int, Any]:
    return await asyncio.to_thread(get_json, _url(hub, path, **params), key)


async def _walk(hub: HubRuntime, key: str, path: str, **params: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        code, body = await _get(hub, key, path, **params, cursor=cursor)
        assert code == 200, body
        rows.extend(body["items"])
        if body["next_cursor"] is None:
            return rows
        cursor = body["next_cursor"]


def _raw_get(url: str, key: str) -> tuple[int, dict[str, str], bytes, int]:
    """(status, headers, body, number of reads it took) of one GET, read in small pieces."""
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.request("GET", f"{parsed.path}?{parsed.query}",
                           headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        pieces = []
        while piece := response.read1(65536):
            pieces.append(piece)
        headers = {name.lower(): value for name, value in response.getheaders()}
        return response.status, headers, b"".join(pieces), len(pieces)
    finally:
        connection.close()


async def test_each_resource_answers_a_viewer_with_filters_and_pages(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        assert hub.store is not None
        viewer = await api_key(hub, Role.VIEWER)
        await add_trades(hub.store, 300)
        hub.store.record_bid(auction_id=5, bidder_id=1002, price_mc=12_000, energy_wh=1000,
                             round=1, outcome="accepted", reason=None, ts_ms=1_000_002)
        for path in (*LISTS, *EXPORTS, "/api/v1/auctions/5"):
            assert (await _get(hub, None, path))[0] == 401, path
            if path in EXPORTS:
                code = (await asyncio.to_thread(_raw_get, _url(hub, path), viewer))[0]
            else:
                code, body = await _get(hub, viewer, path)
            assert code == 200, path

        # trades: filters, both sorts, every row once across pages
        verified = await _walk(hub, viewer, "/api/v1/trades", status="verified", limit=13)
        assert [row["id"] for row in verified] == [n for n in range(1, 301) if n % 4 == 0]
        some = await _walk(hub, viewer, "/api/v1/trades", status=["void", "recorded"],
                           device_id=[1, 2], bidder_id=1000, limit=5)
        assert [row["id"] for row in some] == [
            n for n in range(1, 301)
            if STATUSES[n % 4] in ("void", "recorded") and n % 7 in (1, 2) and n % 3 == 0
        ]
        newest = await _walk(hub, viewer, "/api/v1/trades", sort="time", order="desc",
                             from_ms=1_000_050, to_ms=1_000_100, limit=7)
        assert [row["id"] for row in newest] == list(reversed(range(100, 200)))
        auctions = await _walk(hub, viewer, "/api/v1/auctions", device_id=3, limit=6)
        assert [row["id"] for row in auctions] == [n for n in range(1, 301) if n % 7 == 3]

        code, detail = await _get(hub, viewer, "/api/v1/auctions/5")
        assert code == 200 and detail["id"] == 5 and detail["trade"]["auction_id"] == 5
        assert [(bid["bidder_id"], bid["outcome"]) for bid in detail["bids"]] == [
            (1002, "accepted")
        ]
        assert (await _get(hub, viewer, "/api/v1/auctions/99999"))[0] == 404

        # clear 400s: tampered or foreign cursors, unknown values, limits out of range
        code, first = await _get(hub, viewer, "/api/v1/trades", limit=10)
        cursor = first["next_cursor"]
        for params in (
            {"cursor": cursor[:-3] + "abc"},
            {"cursor": "not-a-cursor"},
            {"cursor": cursor, "status": "void"},  # another query's cursor
            {"status": "settled"},
            {"sort": "price_mc"},
            {"order": "sideways"},
            {"limit": 0},
            {"limit": 1001},
            {"from_ms": -5},
            {"device_id": "seven"},
            {"device_id": list(range(101))},  # at most 100 values per filter
            {"to_ms": 2**63},
        ):
            code, body = await _get(hub, viewer, "/api/v1/trades", **{"limit": 10, **params})
            assert code == 400, (params, body)
            assert body["detail"], params
        assert (await _get(hub, viewer, "/api/v1/batteries", cursor="x1"))[0] == 400
        assert (await _get(hub, viewer, "/api/v1/trades.csv", status="nope"))[0] == 400

        # settlements fill as trades are verified; metrics and events by name, kind, time
        await hub.store.resolve_trade(1, "verified")
        code, settled = await _get(hub, viewer, "/api/v1/settlements", status="pending")
        assert code == 200 and [row["trade_id"] for row in settled["items"]] == [1]
        hub.store.record_metric("api_test_ms", 4.5, ts_ms=2_000_000)
        code, samples = await _get(hub, viewer, "/api/v1/metrics", name="api_test_ms")
        assert [(row["value"], row["ts_ms"]) for row in samples["items"]] == [(4.5, 2_000_000)]
        for ts_ms in (3_000_000, 3_000_001, 3_000_002):
            hub.store.record_event("api_test", ts_ms=ts_ms, payload={"n": ts_ms})
        code, everything = await _get(hub, viewer, "/api/v1/events", kind="api_test")
        assert code == 200 and [row["ts_ms"] for row in everything] == [
            3_000_000, 3_000_001, 3_000_002
        ]
        code, ranged = await _get(hub, viewer, "/api/v1/events", kind="api_test",
                                  from_ms=3_000_001, to_ms=3_000_002)
        assert code == 200 and ranged == everything[1:2]  # same shape as without a range

        # the OpenAPI schema lists each resource with its query parameters
        code, schema = await _get(hub, None, "/schema/openapi.json")
        assert code == 200
        trade_params = {p["name"] for p in schema["paths"]["/api/v1/trades"]["get"]["parameters"]}
        assert {"status", "device_id", "bidder_id", "from_ms", "to_ms", "sort", "order",
                "limit", "cursor"} <= trade_params
        for path in (*LISTS, *EXPORTS, "/api/v1/auctions/{auction_id}"):
            assert path in schema["paths"], path
            assert schema["paths"][path]["get"]["security"], path


async def test_csv_exports_are_streamed_page_by_page_and_correct(tmp_path: Path) -> None:
    async with running_hub(hub_settings(tmp_path)) as hub:
        assert hub.store is not None
        viewer = await api_key(hub, Role.VIEWER)
        await add_trades(hub.store, 10_000)
        reads_before = hub.store.stats.get("list_page_reads", 0)
        status, headers, body, pieces = await asyncio.to_thread(
            _raw_get, _url(hub, "/api/v1/trades.csv"), viewer
        )
        reads = hub.store.stats["list_page_reads"] - reads_before
        assert status == 200 and headers["content-type"].startswith("text/csv")
        assert headers.get("transfer-encoding") == "chunked"  # streamed: no length up front
        assert "content-length" not in headers
        assert reads == 20  # 10,000 rows in pages of 500 (the last one ends the export)
        rows = list(csv.reader(io.StringIO(body.decode())))
        assert rows[0] == ["id", "auction_id", "device_id", "bidder_id", "price_mc",
                           "energy_wh", "reserve_mc", "confirmed_ms", "status"]
        assert [int(row[0]) for row in rows[1:]] == list(range(1, 10_001))
        assert rows[1] == ["1", "1", "1", "1001", "12000", "1000", "10000", "1000000",
                           "unverified"]
        assert pieces >= 1

        # filters apply; cells needing quotes (commas, quotes, new lines) round-trip
        _, _, body, _ = await asyncio.to_thread(
            _raw_get, _url(hub, "/api/v1/trades.csv", status="void", device_id=2), viewer
        )
        ids = [int(row[0]) for row in list(csv.reader(io.StringIO(body.decode())))[1:]]
        assert ids == [n for n in range(1, 10_001) if n % 4 == 2 and n % 7 == 2]
        tricky = {"note": 'a "quoted", comma\nand a new line'}
        seq = hub.store.record_event("csv_test", ts_ms=9_000_000, device_id=4, payload=tricky)
        _, _, body, _ = await asyncio.to_thread(
            _raw_get, _url(hub, "/api/v1/events.csv", kind="csv_test"), viewer
        )
        events = list(csv.DictReader(io.StringIO(body.decode())))
        assert len(events) == 1 and events[0]["seq"] == str(seq)
        assert events[0]["payload"] == '{"note":"a \\"quoted\\", comma\\nand a new line"}'
        assert events[0]["device_id"] == "4" and events[0]["auction_id"] == ""
        _, _, body, _ = await asyncio.to_thread(
            _raw_get, _url(hub, "/api/v1/auctions.csv", status="cleared", to_ms=1_000_003),
            viewer,
        )
        auctions = list(csv.DictReader(io.StringIO(body.decode())))
        assert [row["id"] for row in auctions] == ["1", "2", "3", "4", "5"]


async def test_batteries_and_aggregators_of_a_trading_hub(tmp_path: Path) -> None:
    settings = hub_settings(tmp_path)
    async with running_hub(settings) as hub:
        viewer = await api_key(hub, Role.VIEWER)
        async with sim_fleet(settings, hub.mqtt_url, count=3):
            await wait_for(
                lambda: hub.registry is not None
                and sum(d.online for d in hub.registry.devices.values()) == 3,
                20, "3 batteries online",
            )
            code, page = await _get(hub, viewer, "/api/v1/batteries", limit=2)
            assert code == 200 and len(page["items"]) == 2 and page["next_cursor"]
            code, rest = await _get(hub, viewer, "/api/v1/batteries", limit=2,
                                    cursor=page["next_cursor"])
            ids = [row["device_id"] for row in page["items"] + rest["items"]]
            assert ids == sorted(hub.registry.devices) and rest["next_cursor"] is None
            assert all(row["online"] is True and "soc" in row for row in page["items"])
            code, offline = await _get(hub, viewer, "/api/v1/batteries", online="false")
            assert code == 200 and offline["items"] == []
            code, buyers = await _get(hub, viewer, "/api/v1/aggregators")
            assert code == 200 and len(buyers["items"]) == settings.aggregators
            assert buyers["next_cursor"] is None
            first = buyers["items"][0]
            assert {"aggregator_id", "name", "strategy", "budget_mc", "max_price_mc"} <= set(
                first["config"]
            )
            assert {"spent_mc", "wins", "losses", "success_rate"} <= set(first["standing"])


@pytest.mark.slow
async def test_list_latency_with_100k_trades(tmp_path: Path) -> None:
    """Prints p50/p99 of the trades and auctions lists (first pages, filtered pages, deep
    cursor pages) over HTTP with 100,000 trades in SQLite; run with -s to see the figure."""
    async with running_hub(hub_settings(tmp_path)) as hub:
        assert hub.store is not None
        viewer = await api_key(hub, Role.VIEWER)
        for first_id in range(1, 100_001, 20_000):
            await add_trades(hub.store, 20_000, first_id=first_id)
        _, deep = await _get(hub, viewer, "/api/v1/trades", limit=1000)
        for _ in range(60):  # a cursor 60,000 rows in
            _, deep = await _get(hub, viewer, "/api/v1/trades", limit=1000,
                                 cursor=deep["next_cursor"])
        _, deep_time = await _get(hub, viewer, "/api/v1/auctions", sort="time", order="desc",
                                  limit=1000)
        for _ in range(40):
            _, deep_time = await _get(hub, viewer, "/api/v1/auctions", sort="time",
                                      order="desc", limit=1000,
                                      cursor=deep_time["next_cursor"])
        requests = [
            ("/api/v1/trades", {}),
            ("/api/v1/trades", {"status": "verified"}),
            ("/api/v1/trades", {"device_id": 3, "sort": "time", "order": "desc"}),
            ("/api/v1/trades", {"bidder_id": 1001, "from_ms": 1_020_000, "to_ms": 1_030_000}),
            ("/api/v1/trades", {"cursor": deep["next_cursor"], "limit": 1000}),
            ("/api/v1/auctions", {"sort": "time", "order": "desc"}),
            ("/api/v1/auctions", {"status": "cleared", "device_id": 5}),
            ("/api/v1/auctions", {"sort": "time", "order": "desc", "limit": 1000,
                                  "cursor": deep_time["next_cursor"]}),
        ]
        timings: dict[str, list[float]] = {"trades": [], "auctions": []}
        for _ in range(40):
            for path, params in requests:
                started = time.perf_counter()
                code, body = await _get(hub, viewer, path, **params)
                elapsed_ms = (time.perf_counter() - started) * 1000
                assert code == 200 and body["items"], (path, params, body)
                timings[path.rsplit("/", 1)[1]].append(elapsed_ms)
        for name, values in timings.items():
            values.sort()
            p99 = values[int(len(values) * 0.99) - 1]
            print(f"\n{name}: {len(values)} requests, p50 {statistics.median(values):.1f} ms, "
                  f"p99 {p99:.1f} ms, max {values[-1]:.1f} ms (100,000 trades, SQLite)")
