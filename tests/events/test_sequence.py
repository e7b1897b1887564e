"""Sequence numbers: strictly increasing in a run, across a restart and across a kill -9."""

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from hub.events import EventKind, EventLog
from hub.store import Store, database_url_for

REPO_ROOT = str(Path(__file__).resolve().parents[2])


async def _reserved_through(store: Store) -> int:
    async with store.sql.connect() as connection:
        result = await connection.execute(sa.text("SELECT reserved_through FROM event_sequence"))
        return int(result.scalar_one())


async def test_seq_strictly_increases_within_a_run_and_across_restarts(database_url: str):
    seen: list[int] = []
    for run in range(3):
        async with Store(database_url, event_seq_block=16) as store:
            log = EventLog(store)
            await log.start()
            for number in range(40):  # more than two blocks per run
                seen.append(log.emit(EventKind.OPERATOR_ACTION, run=run, number=number).seq)
                await asyncio.sleep(0)  # the hub's emits are spread over loop iterations
            await log.stop()
    assert all(later > earlier for earlier, later in itertools.pairwise(seen))

    async with Store(database_url) as store:
        stored = await store.list_events(limit=1000)
        assert [row.seq for row in stored] == seen  # nothing lost: close() wrote them
        assert await store.last_event_seq() == seen[-1]
        assert [row.payload["number"] for row in stored[:3]] == [0, 1, 2]


async def test_numbers_are_reserved_durably_before_they_are_handed_out(database_url: str):
    async with Store(database_url, flush_interval_s=3600, event_seq_block=100) as store:
        log = EventLog(store)
        await log.start()
        lagging = 0
        for _ in range(350):  # reads between emits let each refill land (as in a live hub)
            overdraft = store.stats.get("event_seq_overdraft", 0)
            seq = log.emit(EventKind.METRICS_SNAPSHOT).seq
            if seq > await _reserved_through(store):
                # Only when the refill lagged (a starved machine): then it is counted as an
                # overdraft, and the reservation covers the number soon after.
                assert store.stats.get("event_seq_overdraft", 0) > overdraft
                lagging += 1
                for _ in range(200):
                    await asyncio.sleep(0.01)
                    if await _reserved_through(store) >= seq:
                        break
                assert seq <= await _reserved_through(store)
        assert lagging <= 3  # 350 numbers in blocks of 100: refills land in time as a rule
        await log.stop()


async def test_a_burst_beyond_the_reservation_keeps_numbering_and_is_covered_later(
    database_url: str,
):
    async with Store(database_url, flush_interval_s=3600, event_seq_block=4) as store:
        log = EventLog(store)
        await log.start()
        burst = [log.emit(EventKind.BID_PLACED, price_mc=n).seq for n in range(20)]  # no await
        assert burst == list(range(burst[0], burst[0] + 20))
        assert store.stats["event_seq_overdraft"] > 0
        for _ in range(100):
            await asyncio.sleep(0.01)
            if await _reserved_through(store) >= burst[-1]:
                break
        assert await _reserved_through(store) >= burst[-1]
        assert log.emit(EventKind.BID_PLACED).seq > burst[-1]
        await log.stop()


CRASHING_HUB = textwrap.dedent(
    """
    import asyncio, sys
    from hub.events import EventKind, EventLog
    from hub.store import Store

    async def main(url, mode):
        store = Store(url, flush_interval_s=3600, event_seq_block=int(sys.argv[3]))
        await store.start()
        log = EventLog(store)
        await log.start()
        for number in range(50):
            log.emit(EventKind.DEVICE_ONLINE, device_id=number)
        await store.flush()  # these 50 are stored; what follows is queued only, then lost
        if mode == "paced":  # as in a live hub: every reservation lands before it is needed
            for number in range(600):
                last = log.emit(EventKind.BATTERY_STATUS, device_id=number)
                await asyncio.sleep(0.002)
        else:  # a burst past the reservation with no await: numbers beyond what is reserved
            for number in range(100):
                last = log.emit(EventKind.BID_PLACED, device_id=number)
        print(last.seq, store.stats["event_seq_overdraft"], flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "block"), [("paced", 256), ("burst", 64)])
async def test_after_a_kill_9_new_numbers_start_above_every_number_handed_out(
    tmp_path: Path, mode: str, block: int
):
    url = database_url_for(tmp_path)
    hub = subprocess.Popen(
        [sys.executable, "-c", CRASHING_HUB, url, mode, str(block)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": REPO_ROOT},
    )
    try:
        assert hub.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(hub.stdout.readline), 60)
        assert line.strip(), hub.stderr.read() if hub.stderr else ""
        last_handed_out, overdrawn = (int(word) for word in line.split())
    finally:
        hub.send_signal(signal.SIGKILL)
        hub.wait(30)
    assert (overdrawn > 0) == (mode == "burst")

    async with Store(url) as store:
        stored = await store.list_events(limit=1000)
        assert [row.kind for row in stored] == ["device_online"] * 50  # the rest was lost
        assert await store.last_event_seq() < last_handed_out
        log = EventLog(store)
        await log.start()
        first_after_crash = log.emit(EventKind.OPERATOR_ACTION, action="restart")
        await log.stop()
    assert first_after_crash.seq > last_handed_out
