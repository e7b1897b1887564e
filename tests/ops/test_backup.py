"""`etp db backup` / `etp db restore` on SQLite and a real PostgreSQL: online consistency,
round trips through the Store API, and the refusals."""

import asyncio
import itertools
import json
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine
from typer.testing import CliRunner

from hub.cli.main import app
from hub.ops.backup import backup_database, restore_database
from hub.store import Store, database_url_for, head_revision
from hub.store.migrate import downgrade_database, upgrade_database
from tests.pg import create_database

_numbers = itertools.count(1)


def _fresh_url(source_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Another empty database of the same kind as `source_url`."""
    if source_url.startswith("sqlite"):
        return database_url_for(tmp_path / f"other{next(_numbers)}")
    return create_database(request.getfixturevalue("postgres_url"), f"ops_db_{next(_numbers)}")


async def _trade(store: Store, n: int) -> None:
    auction = await store.open_auction(
        device_id=7,
        site="site1",
        mechanism="ascending",
        lot_wh=2_000,
        reserve_mc=15_000,
        opened_ms=1_000 + n,
    )
    await store.record_trade(
        auction_id=auction,
        device_id=7,
        bidder_id=1000 + n % 3,
        price_mc=20_000 + n,
        energy_wh=2_000,
        reserve_mc=15_000,
        confirmed_ms=5_000 + n,
    )


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args), env={"ETP_DATABASE_URL": None})
    return result.exit_code, result.output


async def test_backup_during_writes_holds_a_committed_prefix(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = Store(database_url)
    await store.start()
    committed = 0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal committed
        while not stop.is_set():
            await _trade(store, committed)
            committed += 1

    task = asyncio.create_task(writer())
    try:
        while committed < 30:
            await asyncio.sleep(0.01)
        before = committed
        summary = await asyncio.to_thread(backup_database, database_url, tmp_path / "b.bak")
        after = committed
        while committed < after + 5:  # the hub kept writing while and after the backup ran
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    source_trades = await store.list_trades()
    await store.close()

    assert before <= summary.row_counts["trades"] <= after, (before, summary, after)
    assert summary.revision == head_revision()
    assert (tmp_path / "b.bak").stat().st_mode & 0o777 == 0o600

    target = _fresh_url(database_url, tmp_path, request)
    restored = await asyncio.to_thread(restore_database, target, tmp_path / "b.bak")
    assert not restored.needs_upgrade
    async with Store(target) as copy:
        trades = await copy.list_trades()
        auctions = {auction.id for auction in await copy.list_auctions()}
    # exactly the first N committed trades, each with its auction: a snapshot, not a torn copy
    assert len(trades) == summary.row_counts["trades"]
    assert trades == source_trades[: len(trades)]
    assert {trade.auction_id for trade in trades} <= auctions
    assert summary.row_counts["auctions"] in (len(trades), len(trades) + 1)


async def test_backup_wipe_restore_gives_back_the_same_trades_and_events(
    database_url: str, tmp_path: Path
) -> None:
    async with Store(database_url, flush_interval_s=3600) as store:
        for n in range(12):
            await _trade(store, n)
        for n in range(40):
            store.record_event("trade", device_id=7, payload={"n": n}, ts_ms=9_000 + n)
        await store.flush()
        trades, events = await store.list_trades(), await store.list_events(limit=1000)

    code, output = await asyncio.to_thread(
        _cli, "db", "backup", str(tmp_path / "site.bak"), "--database-url", database_url
    )
    assert code == 0, output
    assert "trades    12" in output and "events    40" in output
    assert f"revision  {head_revision()} (head)" in output

    engine = create_async_engine(database_url)  # wipe: every table dropped
    await downgrade_database(engine, "base")
    await engine.dispose()

    code, output = await asyncio.to_thread(
        _cli, "db", "restore", str(tmp_path / "site.bak"), "--database-url", database_url, "--json"
    )
    assert code == 0, output
    assert json.loads(output)["backup"]["row_counts"]["trades"] == 12
    async with Store(database_url) as store:
        assert await store.list_trades() == trades
        assert await store.list_events(limit=1000) == events
        await _trade(store, 99)  # ids go on after the restored ones (PostgreSQL sequences)
        assert len(await store.list_trades()) == 13


async def test_restore_refuses_a_database_with_data_unless_forced(
    database_url: str, tmp_path: Path
) -> None:
    async with Store(database_url) as store:
        await _trade(store, 1)
    assert backup_database(database_url, tmp_path / "one.bak").row_counts["trades"] == 1
    async with Store(database_url) as store:
        await _trade(store, 2)

    code, output = _cli("db", "restore", str(tmp_path / "one.bak"), "--database-url", database_url)
    assert code == 1
    assert "holds data (auctions 2" in output and "--force" in output
    async with Store(database_url) as store:
        assert len(await store.list_trades()) == 2  # untouched

    code, output = _cli(
        "db", "restore", str(tmp_path / "one.bak"), "--database-url", database_url, "--force"
    )
    assert code == 0, output
    async with Store(database_url) as store:
        assert len(await store.list_trades()) == 1


async def test_restore_refuses_while_the_database_is_open(database_url: str, tmp_path: Path):
    backup_path = tmp_path / "empty.bak"
    async with Store(database_url) as hub_store:  # stands for a running hub
        backup_database(database_url, backup_path)  # a backup is fine while it runs
        code, output = _cli("db", "restore", str(backup_path), "--database-url", database_url)
        assert code == 1
        assert "a running hub?" in output and "stop" in output
        assert await hub_store.list_trades() == []
    code, output = _cli("db", "restore", str(backup_path), "--database-url", database_url)
    assert code == 0, output


async def test_restore_refuses_a_backup_of_a_newer_schema(tmp_path: Path) -> None:
    url = database_url_for(tmp_path / "site")
    async with Store(url):
        pass
    backup_database(url, tmp_path / "future.bak")
    with sqlite3.connect(tmp_path / "future.bak") as future:
        future.execute("UPDATE alembic_version SET version_num = '0042_from_the_future'")
    code, output = _cli(
        "db", "restore", str(tmp_path / "future.bak"), "--data-dir", str(tmp_path / "new")
    )
    assert code == 1
    assert "made by a newer etp (schema revision 0042_from_the_future" in output
    assert "upgrade etp first" in output
    assert not (tmp_path / "new" / "etp.db").exists()


def test_restoring_an_older_schema_says_to_upgrade(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    url = database_url_for(tmp_path / "old")

    async def migrate_to_0005() -> None:
        engine = create_async_engine(url)
        await upgrade_database(engine, "0005_list_indexes")
        await engine.dispose()

    asyncio.run(migrate_to_0005())
    code, output = _cli(
        "db", "backup", str(tmp_path / "old.bak"), "--data-dir", str(tmp_path / "old")
    )
    assert code == 0, output
    assert f"revision  0005_list_indexes (head is {head_revision()})" in output

    code, output = _cli(
        "db", "restore", str(tmp_path / "old.bak"), "--data-dir", str(tmp_path / "n")
    )
    assert code == 0, output
    assert "run `etp db upgrade` before starting the hub" in output
    code, output = _cli("db", "upgrade", "--data-dir", str(tmp_path / "n"))
    assert code == 0 and "upgraded from 0005_list_indexes" in output, output


def test_backup_and_restore_explain_bad_paths(tmp_path: Path) -> None:
    data_dir = str(tmp_path / "none")
    code, output = _cli("db", "backup", str(tmp_path / "x.bak"), "--data-dir", data_dir)
    assert code == 1 and "no database at" in output and "etp db upgrade" in output
    code, output = _cli("db", "restore", str(tmp_path / "missing.bak"), "--data-dir", data_dir)
    assert code == 1 and "no backup at" in output
    (tmp_path / "notes.txt").write_text("not a backup")
    code, output = _cli("db", "restore", str(tmp_path / "notes.txt"), "--data-dir", data_dir)
    assert code == 1 and "neither a SQLite backup nor a pg_dump" in output


@pytest.mark.postgres
def test_postgresql_password_never_printed(tmp_path: Path, postgres_url: str) -> None:
    url = create_database(postgres_url, "ops_password_db")
    with_password = url.replace("postgres@", "postgres:pw-not-shown@")  # trust auth ignores it
    code, output = _cli("db", "upgrade", "--database-url", with_password)
    assert code == 0, output
    code, output = _cli("db", "backup", str(tmp_path / "p.dump"), "--database-url", with_password)
    assert code == 0, output
    code, refused = _cli("db", "restore", str(tmp_path / "p.dump"), "--database-url", with_password)
    assert code == 0, refused  # empty tables: nothing to refuse
    code, wrong_kind = _cli("db", "restore", str(tmp_path / "p.dump"), "--data-dir", str(tmp_path))
    assert code == 1 and "PostgreSQL backup but the database is SQLite" in wrong_kind
    assert "pw-not-shown" not in output + refused + wrong_kind


@pytest.mark.postgres
def test_postgresql_backup_explains_a_too_old_pg_dump(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = create_database(postgres_url, "ops_old_tools_db")
    old_tools = tmp_path / "bin"  # a test double: client tools of PostgreSQL 9
    old_tools.mkdir()
    for tool in ("pg_dump", "pg_restore"):
        (old_tools / tool).write_text(f"#!/bin/sh\necho '{tool} (PostgreSQL) 9.6.24'\n")
        (old_tools / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(old_tools))
    monkeypatch.setattr("hub.ops.backup._PG_LIB_GLOB", str(tmp_path / "none" / "*" / "bin"))
    code, output = _cli("db", "backup", str(tmp_path / "x.dump"), "--database-url", url)
    assert code == 1
    assert "is older" in output and "(9)" in output and "postgresql-client-" in output
    assert not (tmp_path / "x.dump").exists()

    monkeypatch.setenv("PATH", str(tmp_path / "none"))
    code, output = _cli("db", "backup", str(tmp_path / "x.dump"), "--database-url", url)
    assert code == 1 and "pg_dump / pg_restore not found" in output
