"""A viewer opens the URL the demo prints: the key leaves the address bar (and is kept: a
reload needs no sign-in), the page goes live, and auctions and events keep arriving."""

from __future__ import annotations

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import (
    expect,
    has_key_in_url,
    number,
    open_dashboard,
    open_view,
    wait_live,
    wait_number_above,
)
from tests.browser.demo import Demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

GROWTH_TIMEOUT_MS = 60_000


def test_live_auctions_and_events_keep_arriving(demo: Demo, browser: Browser) -> None:
    page = browser.new_page()
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)
    assert not has_key_in_url(page), f"the key stays in the address bar: {page.url}"
    page.reload()  # the key was kept: a reload needs no sign-in
    wait_live(page)
    assert page.get_by_test_id("signin-key").count() == 0
    open_view(page, "auctions")
    expect(page.get_by_test_id("live-auction-count")).to_be_visible()

    auctions_before = number(page, "live-auction-count")
    seq_before = number(page, "last-seq")
    assert auctions_before is not None, "live-auction-count shows no number"
    assert seq_before is not None, "last-seq shows no number"

    # Several auctions close and more events are applied while the user watches.
    wait_number_above(page, "live-auction-count", auctions_before + 2, GROWTH_TIMEOUT_MS)
    seq_after = wait_number_above(page, "last-seq", seq_before, GROWTH_TIMEOUT_MS)

    statuses = page.get_by_test_id("live-auction").evaluate_all(
        "els => els.map(e => e.dataset.status)"
    )
    assert statuses, "no live-auction shown while auctions close"
    assert set(statuses) <= {"open", "cleared", "no_sale", "terminated"}, statuses
    # The page applied events the hub really logged (not a counter of its own).
    logged = demo.events(seq_after - 1, seq_after, demo.viewer_key or "")
    assert [event["seq"] for event in logged] == [seq_after]
    assert page.get_by_test_id("conn-state").get_attribute("data-state") == "live"
