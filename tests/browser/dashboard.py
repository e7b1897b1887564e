"""What a user does and reads on the dashboard, by the data-testid attributes of the
dashboard contract (CONTRACT.md): wait for the live connection, read a number shown, open a
view (through the menu on a narrow screen), sign in with a key."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when used: without playwright the tests skip, not fail to load
    from playwright.sync_api import Locator, LocatorAssertions, Page

LIVE_TIMEOUT_MS = 90_000  # first load: the snapshot, on a busy machine
RECONNECT_TIMEOUT_MS = 120_000  # the page's back-off after the hub was away
EXPECT_TIMEOUT_MS = 30_000  # a click's effect shown, on a busy machine
VIEWS = ("overview", "batteries", "auctions", "history", "feed", "alerts", "performance",
         "settlement")

# The number a testid shows (thousands separators allowed), read inside the page.
_NUMBER_JS = """(testid) => {
  const el = document.querySelector(`[data-testid="${testid}"]`);
  if (!el) return null;
  const digits = (el.textContent || "").replace(/[^0-9-]/g, "");
  return digits === "" || digits === "-" ? null : Number(digits);
}"""


def expect(locator: Locator) -> LocatorAssertions:
    """playwright's expect, waiting up to EXPECT_TIMEOUT_MS for the assertion to hold."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    return playwright_expect(locator)


def open_dashboard(page: Page, url: str) -> None:
    """Load the dashboard at `url`; fails at once when the hub does not serve it."""
    response = page.goto(url)
    assert response is not None and response.ok, (
        f"GET {url} answered {response.status if response else None}: the hub does not serve "
        "the dashboard (dashboard/dist built? ETP_DASHBOARD_DIR?)"
    )


def wait_live(page: Page, timeout_ms: float = LIVE_TIMEOUT_MS) -> None:
    """Wait until the connection indicator says live."""
    expect(page.get_by_test_id("conn-state")).to_have_attribute(
        "data-state", "live", timeout=timeout_ms
    )


def number(page: Page, testid: str) -> int | None:
    """The integer the element with this testid shows, None if absent or showing none."""
    value = page.evaluate(_NUMBER_JS, testid)
    return None if value is None else int(value)


def wait_number_above(page: Page, testid: str, floor: int, timeout_ms: float) -> int:
    """Wait until the number shown by `testid` is above `floor`; return it."""
    page.wait_for_function(
        f"([testid, floor]) => {{ const n = ({_NUMBER_JS})(testid); "
        "return n !== null && n > floor; }",
        arg=[testid, floor], timeout=timeout_ms,
    )
    value = number(page, testid)
    assert value is not None
    return value


def open_view(page: Page, view: str) -> None:
    """Click the view's nav link, opening the nav menu first when the link is hidden in it."""
    link = page.get_by_test_id(f"nav-{view}")
    menu = page.get_by_test_id("nav-menu")
    if not link.is_visible() and menu.is_visible():
        menu.click()
    link.click()


def sign_in(page: Page, key: str) -> None:
    """Paste a key into the sign-in form and submit it."""
    page.get_by_test_id("signin-key").fill(key)
    page.get_by_test_id("signin-submit").click()


def has_key_in_url(page: Page) -> bool:
    """True while the address bar still shows a key (the app must remove the fragment)."""
    return re.search(r"[#&]key=", page.url) is not None
