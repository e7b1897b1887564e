"""The overview and the feed on a desktop (1280 px) and a phone (375 px) screen: screenshots
kept for a person to look at, no sideways scrolling on the phone, the nav menu reaches the
feed there, and no console error or uncaught exception on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import expect, open_dashboard, open_view, wait_live
from tests.browser.demo import Demo

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WIDTHS = {"desktop": (1280, 900), "phone": (375, 812)}
_OVERFLOW_JS = "() => document.documentElement.scrollWidth"


@pytest.mark.parametrize("screen", list(WIDTHS))
def test_overview_and_feed_fit_the_screen(
    screen: str, demo: Demo, browser: Browser, artifacts: Path
) -> None:
    width, height = WIDTHS[screen]
    page = browser.new_page(width, height)
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)

    open_view(page, "overview")
    expect(page.get_by_test_id("kpi-online")).to_contain_text(str(demo.batteries))
    expect(page.get_by_test_id("kpi-trades")).to_be_visible()
    page.screenshot(path=str(artifacts / f"overview-{width}.png"), full_page=True)
    if width <= 375:
        assert page.evaluate(_OVERFLOW_JS) <= width, "the overview scrolls sideways"

    menu = page.get_by_test_id("nav-menu")
    if not page.get_by_test_id("nav-feed").is_visible():
        expect(menu).to_be_visible()  # the links are in the menu: the menu must be there
        menu.click()
        expect(page.get_by_test_id("nav-feed")).to_be_visible()
        page.screenshot(path=str(artifacts / f"menu-{width}.png"))
    page.get_by_test_id("nav-feed").click()
    expect(page.get_by_test_id("feed-search")).to_be_visible()
    expect(page.get_by_test_id("feed-item").first).to_be_visible()
    page.screenshot(path=str(artifacts / f"feed-{width}.png"), full_page=True)
    if width <= 375:
        assert page.evaluate(_OVERFLOW_JS) <= width, "the feed scrolls sideways"

    assert browser.errors.messages == [], browser.errors.messages
