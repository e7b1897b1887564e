"""The bridge's TCP link to a legacy battery (a test double) on its own: a hung battery is a
lost link, and an absent one is retried with exponential backoff up to the cap."""

from __future__ import annotations

from hub.legacy.double import LegacyBatteryDouble
from hub.legacy.link import LegacyLink, LinkConfig
from hub.legacy.wire import LegacyStream
from tests.brokers import free_port
from tests.hub.helpers import wait_for


async def test_a_battery_that_stops_answering_is_a_lost_link() -> None:
    double = LegacyBatteryDouble()
    await double.start()
    changes: list[bool] = []
    reports: list[dict[str, int]] = []
    link = LegacyLink(
        LinkConfig("127.0.0.1", double.port, 60001, poll_interval_s=0.2),
        reports.append,
        changes.append,
    )
    link.start()
    try:
        await wait_for(lambda: changes == [True], 5, "the link up")
        assert reports[0]["erem"] == 9000 and reports[0]["sale"] == 20000
        double.muted = True  # connected, silent: only the missed polls tell
        await wait_for(lambda: changes == [True, False], 5, "the link declared lost")
        double.muted = False
        await wait_for(lambda: changes == [True, False, True], 5, "the link up again")
        assert link.connects == 2
    finally:
        await link.stop()
        await double.stop()


async def test_reconnects_back_off_exponentially_up_to_the_cap() -> None:
    port = free_port()  # nothing listens there yet
    changes: list[bool] = []
    link = LegacyLink(
        LinkConfig("127.0.0.1", port, 60001, backoff_initial_s=0.05, backoff_max_s=0.2),
        lambda _msg: None,
        changes.append,
    )
    link.start()
    try:
        await wait_for(lambda: len(link.backoffs) >= 6, 5, "six attempts")
        assert list(link.backoffs)[:6] == [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]
        double = LegacyBatteryDouble()
        double.port = port
        await double.start()
        try:
            await wait_for(lambda: changes == [True], 3, "the link up once it listens")
        finally:
            await double.stop()
    finally:
        await link.stop()


def test_a_fresh_stream_per_connection() -> None:
    # a connection cut in mid-line leaves no fragment for the next one (LegacyLink makes a
    # new LegacyStream per connection); within one stream the fragment waits
    stream = LegacyStream()
    assert stream.feed_lines(b"2 1 7 5 0.00 20.00") == []
    assert LegacyStream().feed_lines(b"0 0.00 0 9.00 0 48.00 0.50") == []
