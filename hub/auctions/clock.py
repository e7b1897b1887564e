"""The hub's time for boards without a real-time clock: a signed, retained notice per board.

MicroPython ports count from 2000-01-01 and most boards start with no wall time, while every
frame carries a timestamp checked for freshness. The hub publishes its time to each board on
the board's own notice topic `etp/v1/<site>/market/<id>/time` (retained, so a board that
subscribes gets one at once), as a market notice of kind NOTICE_TIME stamped with the hub's
clock and signed like the board's other notices, with its own notice key
(`hub.auctions.notices.NoticeSigner`: the data encoded once, one HMAC per board). A board
trades only once its clock is set from it (or from NTP): firmware/etp_node/clock_sync.py,
shared_etp/README.md "The hub's time".

Which boards: every one the hub has seen and every provisioned one (a board without a clock
publishes nothing before it has the hub's time, so an unprovisioned one the hub never saw
gets none: provision it, `etp device add N`, or let its boot.py set the clock by NTP).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import structlog

from hub.auctions.notices import NoticeSigner, Publisher
from shared_etp.compat import now_ms
from shared_etp.schema import NOTICE_TIME
from shared_etp.topics import TIME, notice_topic

__all__ = ["TIME_NOTICE_INTERVAL_MS", "publish_time", "publish_time_forever", "time_notices"]

# Every second: a retained notice is at most this old when a board reads it (its clock is
# taken as set only from a newer one), and the clocks' allowed skew is 2 s. For 1,000 boards a
# round (1,000 notices signed and published) costs the hub 8.2-8.5 ms of CPU: under 1 % of a
# core (python -m hub.tools.bench.notices --mqtt-url ...: time_publish_round_cpu_ms).
TIME_NOTICE_INTERVAL_MS = 1000

log = structlog.get_logger(__name__)


def time_notices(
    signer: NoticeSigner, device_ids: Iterable[int], ts_ms: int | None = None
) -> dict[int, bytes]:
    """Board id -> its signed time notice: the notice's timestamp is the hub's time (ms since
    1970; now unless given); its data is the publishing interval (ms)."""
    return signer.sign(
        NOTICE_TIME, TIME_NOTICE_INTERVAL_MS, device_ids, now_ms() if ts_ms is None else ts_ms
    )


def publish_time(
    link: Publisher, site: str, signer: NoticeSigner, device_ids: Iterable[int]
) -> int:
    """Publish the hub's time now to each board, retained (QoS 0: the next one follows);
    returns how many were published."""
    frames = time_notices(signer, device_ids)
    for device_id, frame in frames.items():
        link.publish(notice_topic(site, device_id, TIME), frame, 0, True)
    return len(frames)


async def publish_time_forever(
    link: Publisher,
    site: str,
    signer: NoticeSigner,
    boards: Callable[[], Iterable[int]],
    link_up: Callable[[], bool],
) -> None:
    """Publish the hub's time to `boards()` every TIME_NOTICE_INTERVAL_MS while the link is up
    (a task)."""
    while True:
        if link_up():
            try:
                publish_time(link, site, signer, boards())
            except Exception as exc:
                log.warning("could not publish the time notices", error=str(exc))
        await asyncio.sleep(TIME_NOTICE_INTERVAL_MS / 1000.0)
