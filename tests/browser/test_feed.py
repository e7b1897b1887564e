"""The live event feed: choosing a kind shows only events of that kind, and typing a device id
shows only events that mention it (its kind, device, auction or payload), checked against the
hub's own event log."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import expect, open_dashboard, open_view, wait_live
from tests.browser.demo import Demo, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FILTER_TIMEOUT_S = 30.0
KIND = "auction_closed"  # an auction closes every few hundred ms in the demo


def _shown(page: Page) -> list[dict[str, Any]]:
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
    expect(page.get_by_test_id("feed-kind")).to_be_visible()

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

    def shown_events() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The hub's record of each item on screen, and every event it logged in their range."""
        seqs = sorted(item["seq"] for item in _shown(page))
        if not seqs:
            return [], []
        logged = demo.events(seqs[0] - 1, seqs[-1], key)
        by_seq = {event["seq"]: event for event in logged}
        assert set(seqs) <= set(by_seq), "the feed shows events the hub never logged"
        return [by_seq[seq] for seq in seqs], logged

    def of_device(events: list[dict[str, Any]]) -> int:
        return sum(1 for event in events if str(event["device_id"]) == needle)

    page = browser.new_page()
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)
    open_view(page, "feed")
    # Unfiltered, the feed shows this battery's events among events that do not mention it.
    unfiltered = wait_until(
        lambda: (events := shown_events()[0]) and of_device(events) >= 3
        and not all(_mentions(event, needle) for event in events) and events,
        FILTER_TIMEOUT_S, f"battery {needle}'s events among others in the feed",
    )
    others = {event["seq"] for event in unfiltered if not _mentions(event, needle)}

    page.get_by_test_id("feed-search").fill(needle)

    def only_mentioning() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        shown, logged = shown_events()
        if not shown or not all(_mentions(event, needle) for event in shown):
            return None
        return shown, logged

    shown, _logged = wait_until(only_mentioning, FILTER_TIMEOUT_S,
                               f"only items mentioning {needle} in the feed")
    assert of_device(shown) >= 3, f"battery {needle}'s events are gone: {shown}"
    # what the feed showed before that does not mention it is hidden now
    assert others and not others & {event["seq"] for event in shown}
