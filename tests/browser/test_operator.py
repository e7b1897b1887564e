"""Pausing and resuming trading from the dashboard: an operator signs in with the key the demo
printed, pauses (the hub opens no auction while paused, as its REST status confirms) and
resumes (auctions open again). A viewer sees no controls, and the hub refuses the command
(403) when the viewer's key sends it from the page."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import expect, open_dashboard, sign_in, wait_live
from tests.browser.demo import Demo, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

STATUS_TIMEOUT_S = 30.0
PAUSED_WATCH_S = 4.0  # ~40 auction intervals of a 4-battery demo: none may open
SETTLE_S = 1.0  # the scheduler obeys at its next 20 ms tick; a busy machine may lag


def _market(demo: Demo, key: str) -> dict[str, Any]:
    return demo.api("/api/v1/status", key)["market"]  # type: ignore[no-any-return]


def _paused(demo: Demo, key: str) -> bool:
    return bool(demo.api("/api/v1/status", key)["trading"]["paused"])


def test_operator_pauses_and_resumes_trading(demo: Demo, browser: Browser) -> None:
    key = demo.operator_key
    assert key, f"the demo's first start printed no operator key:\n{demo.log_tail()}"
    page = browser.new_page()
    open_dashboard(page, demo.base_url + "/")
    sign_in(page, key)
    wait_live(page)
    expect(page.get_by_test_id("whoami-role")).to_have_text("operator")
    state = page.get_by_test_id("trading-state")
    expect(state).to_have_text("trading")
    wait_until(lambda: _market(demo, key).get("auctions_opened", 0) > 0, STATUS_TIMEOUT_S,
               "a first auction")

    page.get_by_test_id("trading-pause").click()
    expect(state).to_have_text("paused")
    wait_until(lambda: _paused(demo, key), STATUS_TIMEOUT_S, "status trading.paused")
    time.sleep(SETTLE_S)  # not an assertion: lets a tick already running finish
    opened = _market(demo, key)["auctions_opened"]
    deadline = time.monotonic() + PAUSED_WATCH_S
    while time.monotonic() < deadline:
        assert _market(demo, key)["auctions_opened"] == opened, "an auction opened while paused"
        assert _paused(demo, key)
        time.sleep(0.25)
    expect(state).to_have_text("paused")

    page.get_by_test_id("trading-resume").click()
    expect(state).to_have_text("trading")
    wait_until(lambda: not _paused(demo, key), STATUS_TIMEOUT_S, "status trading not paused")
    wait_until(lambda: _market(demo, key)["auctions_opened"] > opened, STATUS_TIMEOUT_S,
               "a new auction after resuming")
    expect(page.get_by_test_id("operator-error")).to_have_count(0)


def test_viewer_has_no_trading_controls_and_is_refused(demo: Demo, browser: Browser) -> None:
    page = browser.new_page()
    assert demo.dashboard_url is not None
    open_dashboard(page, demo.dashboard_url)
    wait_live(page)
    expect(page.get_by_test_id("whoami-role")).to_have_text("viewer")
    for control in ("trading-pause", "trading-resume"):
        expect(page.get_by_test_id(control)).to_have_count(0)

    answer = page.evaluate(
        """async () => {
          const key = localStorage.getItem("etp.apiKey");
          const response = await fetch("/api/v1/trading/pause", {
            method: "POST", headers: {Authorization: `Bearer ${key}`}});
          return {status: response.status, key};
        }"""
    )
    assert answer["key"] == demo.viewer_key
    assert answer["status"] == 403
    assert not _paused(demo, demo.viewer_key or "")
