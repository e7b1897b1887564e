"""The live event feed: choosing a kind shows only events of that kind, and typing a device id
shows only events that mention it (its kind, device, auction or payload), checked against the
hub's own event log."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import open_dashboard, open_view, wait_live
from tests.browser.demo import Demo, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FILTER_TIMEOUT_S = 30.0
KIND = "auction_closed"  # an auction closes every few hundred ms in the demo


def _shown(page: Any) -> list[dict[str, Any]]:
    """The feed items on screen: [{"kind", "seq"}]."""
    return page.get_by_test_id("feed-item").evaluate_all(  # type: ignore[no-any-return]
        "els => els.map(e => ({kind: e.dataset.kind, seq: Number(e.dataset.seq)}))"
    )


def _mentions(event: dict[str, Any], needle: str) -> bool:
    """The feed's search rule (CONTRACT.md): kind, device id, auction id or payload text."""
    texts = [event["kind"], str(event.get("device_id")), str(event.get("auction_id")),
             json.dumps(event.get("payload"))]
    return any(needle in text for text in texts)


def test_feed_filters_by_kind(demo: Demo, browser: Browser) -> None:
    page = browser.new_page()
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)
    open_view(page, "feed")

    kinds_offered = page.get_by_test_id("feed-kind").locator("option").evaluate_all(
        "els => els.map(e => e.value)"
    )
    assert "" in kinds_offered and KIND in kinds_offered, kinds_offered
    wait_until(lambda: {item["kind"] for item in _shown(page)} - {KIND}, FILTER_TIMEOUT_S,
               "feed items of several kinds (unfiltered)")

    def only_kind(newer_than: int) -> list[dict[str, Any]] | None:
        items = _shown(page)
        if not items or any(item["kind"] != KIND for item in items):
            return None
        return items if max(item["seq"] for item in items) > newer_than else None

    page.get_by_test_id("feed-kind").select_option(KIND)
    shown = wait_until(lambda: only_kind(0), FILTER_TIMEOUT_S, f"only {KIND} items in the feed")
    # Events arriving while filtered are filtered too.
    newest = max(item["seq"] for item in shown)
    wait_until(lambda: only_kind(newest), FILTER_TIMEOUT_S, f"only {KIND} items, newer ones")

    page.get_by_test_id("feed-kind").select_option("")
    wait_until(lambda: {item["kind"] for item in _shown(page)} - {KIND}, FILTER_TIMEOUT_S,
               "items of other kinds again after choosing all kinds")


def test_feed_search_by_device_id(demo: Demo, browser: Browser) -> None:
    key = demo.viewer_key or ""
    devices = demo.api("/api/v1/devices", key)
    assert len(devices) == demo.batteries, devices
    needle = str(max(device["device_id"] for device in devices))

    page = browser.new_page()
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)
    open_view(page, "feed")
    wait_until(lambda: len(_shown(page)) >= 10, FILTER_TIMEOUT_S, "ten feed items")

    page.get_by_test_id("feed-search").fill(needle)

    def all_shown_mention_it() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        seqs = sorted(item["seq"] for item in _shown(page))
        if not seqs:
            return None
        logged = demo.events(seqs[0] - 1, seqs[-1], key)
        by_seq = {event["seq"]: event for event in logged}
        if any(seq not in by_seq or not _mentions(by_seq[seq], needle) for seq in seqs):
            return None
        return [by_seq[seq] for seq in seqs], logged

    shown, logged = wait_until(all_shown_mention_it, FILTER_TIMEOUT_S,
                               f"only items mentioning device {needle} in the feed")
    assert any(str(event.get("device_id")) == needle for event in shown), shown
    hidden = [event for event in logged if not _mentions(event, needle)]
    assert hidden, "every logged event mentions the device: the search filtered nothing here"
