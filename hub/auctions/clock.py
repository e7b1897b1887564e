"""The hub's time for boards without a real-time clock: a signed, retained notice each second.

MicroPython ports count from 2000-01-01 and most boards start with no wall time, while every
frame carries a timestamp checked for freshness. The hub publishes its time on
`etp/v1/<site>/market/time` (retained, so a board that subscribes gets one at once), as a
market notice of kind NOTICE_TIME stamped with the hub's clock and signed with the notice key
every board holds; a board trades only once its clock is set from it (or from NTP):
firmware/etp_node/clock_sync.py, shared_etp/README.md "The hub's time".
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from hub.auctions.notices import Publisher
from shared_etp.schema import NOTICE_TIME
from shared_etp.signing import encode_notice
from shared_etp.topics import TIME, market_topic

__all__ = ["TIME_NOTICE_INTERVAL_MS", "publish_time", "publish_time_forever", "time_notice"]

# Every second: a retained notice is at most this old when a board reads it (its clock is
# taken as set only from a newer one), and the clocks' allowed skew is 2 s.
TIME_NOTICE_INTERVAL_MS = 1000

log = structlog.get_logger(__name__)


def time_notice(notice_key: bytes, ts_ms: int | None = None) -> bytes:
    """The signed time notice: the notice's timestamp is the hub's time (ms since 1970); its
    data is the publishing interval (ms)."""
    return encode_notice(NOTICE_TIME, TIME_NOTICE_INTERVAL_MS, 0, 0, notice_key, ts_ms)


def publish_time(link: Publisher, site: str, notice_key: bytes) -> None:
    """Publish the hub's time now, retained (QoS 0: the next one follows in a second)."""
    link.publish(market_topic(site, TIME), time_notice(notice_key), 0, True)


async def publish_time_forever(
    link: Publisher, site: str, notice_key: bytes, link_up: Callable[[], bool]
) -> None:
    """Publish the hub's time every TIME_NOTICE_INTERVAL_MS while the link is up (a task)."""
    while True:
        if link_up():
            try:
                publish_time(link, site, notice_key)
            except Exception as exc:
                log.warning("could not publish the time notice", error=str(exc))
        await asyncio.sleep(TIME_NOTICE_INTERVAL_MS / 1000.0)
