"""The page outlives a hub restart: with the demo stopped (Ctrl-C) and started again on the
same data dir and ports, the page leaves `live`, reconnects by itself, and every event the hub
logged from the page's first snapshot to now reached it exactly once, across the restart.

The demo makes a new viewer key on each start and revokes the last one, so the page signs in
with a key made by `etp apikey create` before the first start (as a user would keep one)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.browser.conftest import Browser
from tests.browser.dashboard import (
    RECONNECT_TIMEOUT_MS,
    expect,
    number,
    open_dashboard,
    open_view,
    wait_live,
    wait_number_above,
)
from tests.browser.demo import Demo, create_api_key

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CATCH_UP_TIMEOUT_MS = 60_000

# Every value the connection indicator's data-state takes, in order, kept in the page (the
# element may be re-rendered, so the whole document is observed).
_RECORD_STATES_JS = """() => {
  window.__connStates = [];
  const note = () => {
    const el = document.querySelector('[data-testid="conn-state"]');
    const state = el ? el.dataset.state : "absent";
    const states = window.__connStates;
    if (states[states.length - 1] !== state) states.push(state);
  };
  note();
  new MutationObserver(note).observe(document.documentElement, {
    subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"]});
}"""


class SocketLog:
    """What the hub sent the page over its WebSockets: each event's seq, and the other
    messages (snapshot, resume, resync) in order."""

    def __init__(self) -> None:
        self.event_seqs: list[int] = []
        self.messages: list[dict[str, Any]] = []
        self.sockets = 0

    def attach(self, socket: Any) -> None:
        self.sockets += 1
        socket.on("framereceived", self.frame)

    def frame(self, payload: str | bytes) -> None:
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        if message.get("type") == "event":
            self.event_seqs.append(int(message["seq"]))
        else:
            self.messages.append(message)


@pytest.mark.timeout(900)
def test_page_resumes_after_a_hub_restart_without_a_gap(make_demo: Any, browser: Browser) -> None:
    demo: Demo = make_demo()
    demo.data_dir.mkdir(parents=True)
    key = create_api_key(demo.data_dir, "e2e", "viewer")
    demo.start()

    sockets = SocketLog()
    page = browser.new_page()
    page.on("websocket", sockets.attach)
    open_dashboard(page, f"{demo.base_url}/#key={key}")
    wait_live(page)
    open_view(page, "feed")
    first_seq = wait_number_above(page, "last-seq", 0, CATCH_UP_TIMEOUT_MS)
    wait_number_above(page, "last-seq", first_seq + 20, CATCH_UP_TIMEOUT_MS)
    page.evaluate(_RECORD_STATES_JS)

    assert demo.stop() == 0, f"the demo did not stop cleanly:\n{demo.log_tail()}"
    conn = page.get_by_test_id("conn-state")
    expect(conn).not_to_have_attribute("data-state", "live")
    seq_at_stop = number(page, "last-seq")
    assert seq_at_stop is not None

    demo.start()  # same data dir and ports; prints a new viewer key, revokes the old one
    wait_live(page, RECONNECT_TIMEOUT_MS)
    assert page.get_by_test_id("signin-key").count() == 0, "sent back to sign-in"
    states = page.evaluate("() => window.__connStates")
    assert "connecting" in states and states[-1] == "live", states

    # The page catches up with what the hub logged while it was away and since.
    logged_now = demo.events(seq_at_stop, 2**62, key)
    assert logged_now, "the restarted hub logged no event"
    newest = logged_now[-1]["seq"]
    wait_number_above(page, "last-seq", newest - 1, CATCH_UP_TIMEOUT_MS)
    page_seq = number(page, "last-seq")
    assert page_seq is not None and page_seq >= newest

    resyncs = [m for m in sockets.messages if m.get("type") == "resync"]
    assert not resyncs, f"the hub had to resync the page: {resyncs}"
    snapshots = [m["seq"] for m in sockets.messages if m.get("type") == "snapshot"]
    assert len(snapshots) == 1, f"the page reloaded the snapshot: {sockets.messages}"
    resumes = [m for m in sockets.messages if m.get("type") == "resume"]
    assert resumes and resumes[-1]["after_seq"] >= snapshots[0], sockets.messages

    # Every logged event after the first snapshot, up to what the page shows, reached it once.
    logged = [event["seq"] for event in demo.events(snapshots[0], page_seq, key)]
    received = [seq for seq in sockets.event_seqs if snapshots[0] < seq <= page_seq]
    duplicates = sorted({seq for seq in received if received.count(seq) > 1})
    assert not duplicates, f"events received twice: {duplicates[:20]}"
    missing = sorted(set(logged) - set(received))
    assert not missing, f"{len(missing)} events never reached the page: {missing[:20]}"
    assert sorted(received) == logged
    assert logged[0] <= seq_at_stop < logged[-1], "the range does not span the restart"

    # The feed on screen shows a run of the log with no hole and no repeat.
    feed = page.get_by_test_id("feed-item").evaluate_all(
        "els => els.map(e => Number(e.dataset.seq))"
    )
    assert feed, "the feed shows no event"
    assert len(feed) == len(set(feed)), "the feed shows an event twice"
    run = [event["seq"] for event in demo.events(min(feed) - 1, max(feed), key)]
    assert sorted(feed) == run, "the feed has holes"
