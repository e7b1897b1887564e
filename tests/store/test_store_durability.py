"""A hub killed with SIGKILL right after a trade commits loses nothing and duplicates nothing."""

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hub.store import Store, StoreWriteError, database_url_for

REPO = Path(__file__).resolve().parents[2]

# The child plays the hub: it confirms trades one by one and announces each one the moment
# record_trade returns (which is when a real hub would send BidConfirm).
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from hub.store import Store

    async def main(url, auctions):
        store = Store(url)
        await store.start()
        for auction_id in auctions:
            store.record_event("trade_pending", auction_id=auction_id, ts_ms=1)
            trade, created = await store.record_trade(
                auction_id=auction_id, device_id=7, bidder_id=1001, price_mc=21_500,
                energy_wh=2_000, reserve_mc=15_000, confirmed_ms=5_000,
            )
            print(f"committed {trade.id} {auction_id} {created}", flush=True)
        await asyncio.sleep(3600)  # never closes: the parent kills us

    asyncio.run(main(sys.argv[1], [int(a) for a in sys.argv[2:]]))
    """
)


async def _prepare(url: str, count: int) -> list[int]:
    async with Store(url) as store:
        return [
            await store.open_auction(
                device_id=7,
                site="site1",
                mechanism="ascending",
                lot_wh=2_000,
                reserve_mc=15_000,
                opened_ms=n,
            )
            for n in range(count)
        ]


def _run_child_and_kill(url: str, auctions: list[int], kill_after: int) -> list[tuple[int, int]]:
    """Start the child, SIGKILL it right after its `kill_after`-th "committed" line."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, *map(str, auctions)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    committed: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    try:
        assert child.stdout is not None
        while len(committed) < kill_after and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            word, trade_id, auction_id, created = line.split()
            assert (word, created) == ("committed", "True")
            committed.append((int(trade_id), int(auction_id)))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, errors = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert len(committed) == kill_after, f"child stopped early: {errors[-2000:]}"
    return committed


def test_trade_committed_before_sigkill_survives_exactly_once(tmp_path: Path):
    url = database_url_for(tmp_path)
    auctions = asyncio.run(_prepare(url, 1))
    ((trade_id, auction_id),) = _run_child_and_kill(url, auctions, kill_after=1)

    async def check() -> None:
        async with Store(url) as store:
            (trade,) = await store.list_trades()
            assert (trade.id, trade.auction_id, trade.price_mc) == (trade_id, auction_id, 21_500)
            assert trade.status == "recorded"  # its battery has not proved it yet
            assert await store.pending_settlements() == []
            # The restarted hub retries the confirmation: no duplicate.
            again, created = await store.record_trade(
                auction_id=auction_id,
                device_id=7,
                bidder_id=1001,
                price_mc=21_500,
                energy_wh=2_000,
                reserve_mc=15_000,
                confirmed_ms=5_000,
            )
            assert (again.id, created) == (trade_id, False)
            assert len(await store.list_trades()) == 1
            # The hub died before closing the auction: a restart sees it open, with its trade.
            (left_open,) = await store.open_auctions()
            assert left_open.id == auction_id
            assert await store.get_trade(auction_id) == trade

    asyncio.run(check())


def test_kill_in_the_middle_of_a_trade_burst_loses_no_announced_trade(tmp_path: Path):
    url = database_url_for(tmp_path)
    auctions = asyncio.run(_prepare(url, 200))
    announced = _run_child_and_kill(url, auctions, kill_after=40)

    async def check() -> None:
        async with Store(url) as store:
            stored = {(t.id, t.auction_id) for t in await store.list_trades()}
            # Every announced trade is there; at most the one in flight when killed is extra.
            assert set(announced) <= stored
            assert len(stored) - len(announced) <= 1
            assert len({auction_id for _, auction_id in stored}) == len(stored)
            assert await store.list_settlements() == []
            assert {a.id for a in await store.open_auctions()} == set(auctions)

    asyncio.run(check())


async def test_sqlite_connections_are_set_up_for_durability(tmp_path: Path):
    async with Store(database_url_for(tmp_path)) as store, store.sql.connect() as connection:
        pragmas = {
            name: (await connection.exec_driver_sql(f"PRAGMA {name}")).scalar_one()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    # WAL, synchronous=FULL (2): a commit is on disk when record_trade returns.
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["synchronous"] == 2
    assert pragmas["foreign_keys"] == 1
    assert pragmas["busy_timeout"] >= 1000


async def test_a_failed_batch_write_keeps_its_rows_and_is_retried(tmp_path: Path):
    """Another process holds the SQLite write lock longer than the busy timeout."""
    url = database_url_for(tmp_path)
    async with Store(url, flush_interval_s=3600, busy_timeout_ms=100) as store:
        for number in range(10):
            store.record_event("queued", device_id=number, ts_ms=number)
        blocker = sqlite3.connect(tmp_path / "etp.db", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreWriteError, match="kept queued"):
                await store.flush()
            assert store.pending_writes == 10
            assert store.stats["flush_errors"] == 1
            with pytest.raises(StoreWriteError):
                await store.record_trade(
                    auction_id=1,
                    device_id=7,
                    bidder_id=1001,
                    price_mc=1,
                    energy_wh=1,
                    reserve_mc=1,
                    confirmed_ms=1,
                )
        finally:
            blocker.rollback()
            blocker.close()
        await store.flush()
        assert store.pending_writes == 0
        assert [e.device_id for e in await store.list_events()] == list(range(10))
