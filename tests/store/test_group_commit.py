"""Group commit: concurrent durable writes share transactions, yet each caller gets its own
result or error, and nothing a caller was told is committed is lost."""

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

from hub.store import (
    AuctionStateError,
    Store,
    StoreWriteError,
    UnknownAuctionError,
    database_url_for,
)

REPO = Path(__file__).resolve().parents[2]


async def _open(store: Store, count: int, site: str = "site1") -> list[int]:
    return list(
        await asyncio.gather(
            *(
                store.open_auction(
                    device_id=7,
                    site=site,
                    mechanism="ascending",
                    lot_wh=2_000,
                    reserve_mc=15_000,
                    opened_ms=n,
                )
                for n in range(count)
            )
        )
    )


def _trade(store: Store, auction_id: int, bidder_id: int = 1001, price_mc: int = 21_500):
    return store.record_trade(
        auction_id=auction_id,
        device_id=7,
        bidder_id=bidder_id,
        price_mc=price_mc,
        energy_wh=2_000,
        reserve_mc=15_000,
        confirmed_ms=5_000,
    )


async def test_concurrent_trades_share_commits_and_each_is_returned_once(database_url: str):
    async with Store(database_url, flush_interval_s=3600) as store:
        auctions = await _open(store, 300)
        assert len(set(auctions)) == 300
        commits_before = store.stats["group_commits"]
        # Every auction confirmed twice at once (e.g. a retried BidConfirm): one trade each.
        results = await asyncio.gather(
            *(_trade(store, a, bidder_id=1000 + a % 7) for a in auctions),
            *(_trade(store, a, bidder_id=1000 + a % 7) for a in auctions),
        )
        commits = store.stats["group_commits"] - commits_before
        created = [trade for trade, was_created in results if was_created]
        assert sorted(t.auction_id for t in created) == sorted(auctions)
        by_auction = {t.auction_id: t for t in created}
        for trade, _was_created in results:
            assert trade == by_auction[trade.auction_id]
        assert commits < 100, f"{commits} commits for 600 concurrent trades: no group commit"

    # A fresh store (new connections) sees every trade, each recorded and none settled yet (a
    # trade is settled only once its battery proved it).
    async with Store(database_url, flush_interval_s=3600) as reopened:
        stored = await reopened.list_trades()
        assert {(t.id, t.auction_id, t.bidder_id) for t in stored} == {
            (t.id, t.auction_id, t.bidder_id) for t in created
        }
        assert {t.status for t in stored} == {"recorded"}
        assert await reopened.pending_settlements(limit=1000) == []


async def test_one_bad_request_in_a_batch_fails_alone(database_url: str):
    async with Store(database_url, flush_interval_s=3600) as store:
        auctions = await _open(store, 40)
        await store.close_auction(auctions[0], status="no_sale", closed_ms=1)
        fallbacks_before = store.stats["group_fallbacks"]
        outcomes = await asyncio.gather(
            *(_trade(store, a) for a in auctions[1:20]),
            _trade(store, 2_000_000),  # no such auction: foreign key violation
            store.close_auction(auctions[0], status="cleared", closed_ms=2),  # already no_sale
            store.close_auction(3_000_000, status="cleared", closed_ms=2),  # no such auction
            *(store.close_auction(a, status="cleared", closed_ms=3) for a in auctions[20:30]),
            _open(store, 5, site="site2"),
            return_exceptions=True,
        )
        trades, rest = outcomes[:19], outcomes[19:]
        assert all(created for _trade_row, created in trades)  # type: ignore[union-attr]
        assert isinstance(rest[0], UnknownAuctionError)
        assert isinstance(rest[1], AuctionStateError)
        assert isinstance(rest[2], UnknownAuctionError)
        assert rest[3:13] == [None] * 10
        new_auctions = rest[13]
        assert isinstance(new_auctions, list) and len(set(new_auctions)) == 5
        assert store.stats["group_fallbacks"] > fallbacks_before  # the shared path was hit

        assert sorted(t.auction_id for t in await store.list_trades()) == sorted(auctions[1:20])
        assert await store.list_settlements() == []
        statuses = {a.id: a.status for a in await store.list_auctions()}
        assert statuses[auctions[0]] == "no_sale"
        assert all(statuses[a] == "cleared" for a in auctions[20:30])
        assert all(statuses[a] == "open" for a in [*auctions[1:20], *auctions[30:], *new_auctions])


async def test_a_cancelled_caller_does_not_disturb_the_others(tmp_path: Path):
    async with Store(database_url_for(tmp_path), flush_interval_s=3600) as store:
        auctions = await _open(store, 20)
        tasks = [asyncio.create_task(_trade(store, a)) for a in auctions]
        await asyncio.sleep(0)
        tasks[5].cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[5], asyncio.CancelledError)
        assert all(created for _t, created in done[:5] + done[6:])  # type: ignore[misc]
        # The cancelled trade may or may not be stored; a retry settles it exactly once.
        retry, _created = await _trade(store, auctions[5])
        stored = await store.list_trades()
        assert sorted(t.auction_id for t in stored) == sorted(auctions)
        assert retry in stored


async def test_a_locked_database_fails_the_whole_batch_fast_then_recovers(tmp_path: Path):
    """Another process holds the SQLite write lock: every caller gets StoreWriteError once
    (not one busy timeout per request), and the same writes succeed after the lock is gone."""
    async with Store(database_url_for(tmp_path), flush_interval_s=3600, busy_timeout_ms=200) as s:
        auctions = await _open(s, 30)
        blocker = sqlite3.connect(tmp_path / "etp.db", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            failed = await asyncio.gather(
                *(_trade(s, a) for a in auctions), _open(s, 3), return_exceptions=True
            )
            assert all(isinstance(err, StoreWriteError) for err in failed)
            assert time.monotonic() - started < 3  # 31 requests x 0.2 s would be 6 s
        finally:
            blocker.rollback()
            blocker.close()
        assert await s.list_trades() == []
        done = await asyncio.gather(*(_trade(s, a) for a in auctions))
        assert all(created for _t, created in done)
        assert len(await s.list_trades()) == 30


# The child confirms trades from many tasks at once and announces each the moment its
# record_trade returns (when a real hub would send BidConfirm).
CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from hub.store import Store

    async def main(url, auctions):
        store = Store(url)
        await store.start()
        queue = list(auctions)

        async def worker():
            while queue:
                auction_id = queue.pop()
                trade, created = await store.record_trade(
                    auction_id=auction_id, device_id=7, bidder_id=1001, price_mc=21_500,
                    energy_wh=2_000, reserve_mc=15_000, confirmed_ms=5_000,
                )
                print(f"committed {trade.id} {auction_id} {created}", flush=True)

        await asyncio.gather(*(worker() for _ in range(32)))
        await asyncio.sleep(3600)  # never closes: the parent kills us

    asyncio.run(main(sys.argv[1], [int(a) for a in sys.argv[2:]]))
    """
)


@pytest.mark.slow
def test_sigkill_during_concurrent_trades_loses_no_announced_trade(tmp_path: Path):
    url = database_url_for(tmp_path)

    async def prepare() -> list[int]:
        async with Store(url) as store:
            return await _open(store, 600)

    auctions = asyncio.run(prepare())
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, *map(str, auctions)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    announced: list[tuple[int, int]] = []
    deadline = time.monotonic() + 60
    try:
        assert child.stdout is not None
        while len(announced) < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            word, trade_id, auction_id, created = line.split()
            assert (word, created) == ("committed", "True")
            announced.append((int(trade_id), int(auction_id)))
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        _, errors = child.communicate(timeout=30)
    assert len(announced) == 150, f"child stopped early: {errors[-2000:]}"
    assert len(set(announced)) == 150

    async def check() -> None:
        async with Store(url) as store:
            stored = {(t.id, t.auction_id) for t in await store.list_trades()}
            assert set(announced) <= stored  # every announced trade survived the kill
            assert len({auction_id for _, auction_id in stored}) == len(stored)
            # The restarted hub retries every confirmation: the same trades, no duplicates.
            retried = await asyncio.gather(*(_trade(store, a) for _, a in announced))
            assert [(t.id, t.auction_id) for t, _ in retried] == announced
            assert not any(created for _, created in retried)
            assert len(await store.list_trades()) == len(stored)

    asyncio.run(check())


async def test_open_auction_cancelled_in_flight_leaves_no_orphan_open(tmp_path: Path):
    """A hub stopping cancels auctions that are still opening: whatever the timing, every
    auction left open is one whose caller got its id."""
    url = database_url_for(tmp_path)
    told: set[int] = set()
    async with Store(url, flush_interval_s=3600) as store:
        told.update(await _open(store, 5))
        for delay in (0, 0.0005, 0.001, 0.002, 0.005):
            tasks = [asyncio.create_task(_open(store, 1)) for _ in range(30)]
            await asyncio.sleep(delay)
            for task in tasks[::2]:
                task.cancel()
            for outcome in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(outcome, list):
                    told.update(outcome)
    async with Store(url) as reopened:
        still_open = {a.id for a in await reopened.open_auctions()}
    assert still_open == told
