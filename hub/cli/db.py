"""`etp db upgrade|current|backup|restore`: migrate the hub database, show its revision, back it
up and restore it (hub/ops/backup.py); `etp bench store`."""

from __future__ import annotations

import asyncio
import inspect
import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="The hub database (SQLite in the data dir, or ETP_DATABASE_URL): migrations.",
    no_args_is_help=True,
)

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host:5432/etp "
        "(default: ETP_DATABASE_URL, else SQLite etp.db in the data dir).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Data directory (default: ETP_DATA_DIR, else ./.etp).",
        show_default=False,
    ),
]


def unwrap_paragraphs(text: str | None) -> str:
    """Help text with each paragraph on one line (typer's rich help keeps single line breaks
    of a docstring; the terminal wraps instead)."""
    paragraphs = inspect.cleandoc(text or "").split("\n\n")
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)


def resolve_url(database_url: str | None, data_dir: Path | None) -> str:
    """Flags override ETP_* environment variables (read by hub.settings) override defaults."""
    from hub.settings import Settings

    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return Settings(**overrides).resolved_database_url()


def _fail(message: str) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(1)


async def _upgrade(url: str) -> tuple[str | None, str | None]:
    from hub.store import InvalidValueError, Store

    try:
        store = Store(url)
    except InvalidValueError as err:
        raise typer.BadParameter(str(err)) from None
    await store.start()
    try:
        return store.migrated_from, store.revision
    finally:
        await store.close()


@app.command()
def upgrade(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Migrate the database to the newest schema (creates it if needed); prints the revision."""
    from hub.store import StoreError

    url = resolve_url(database_url, data_dir)
    try:
        before, after = asyncio.run(_upgrade(url))
    except StoreError as err:
        _fail(str(err))
        return
    from sqlalchemy.engine import make_url

    shown = make_url(url).render_as_string(hide_password=True)
    if before == after:
        typer.echo(f"{after} (already up to date) {shown}")
    else:
        typer.echo(f"{after} (upgraded from {before or 'empty'}) {shown}")


async def _current(url: str) -> str | None:
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store import current_revision

    engine = create_async_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


@app.command()
def current(database_url: DatabaseUrl = None, data_dir: DataDir = None) -> None:
    """Print the revision the database is at ('none' if never migrated) and the newest one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from hub.store import head_revision

    url = resolve_url(database_url, data_dir)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(str(parsed.database))
        if not path.exists():
            typer.echo(f"none (no database at {path}; run `etp db upgrade`) head {head_revision()}")
            return
    try:
        revision = asyncio.run(_current(url))
    except (SQLAlchemyError, OSError) as err:
        _fail(f"cannot read the database: {err}")
        return
    head = head_revision()
    state = "up to date" if revision == head else "run `etp db upgrade`"
    typer.echo(f"{revision or 'none'} (head {head}: {state})")


def bench_store(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="An EMPTY throwaway database to measure (default: SQLite in a temp dir).",
            show_default=False,
        ),
    ] = None,
    trades: Annotated[int, typer.Option(help="Trades per measurement.", min=10)] = 300,
    bids: Annotated[int, typer.Option(help="Bids to write (events: a fifth).", min=100)] = 50_000,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Trades/s (durable, one at a time and concurrent) and bids/events/s the store sustains."""
    from hub.store import database_url_for
    from hub.tools.bench.store import run_store_benchmark

    with tempfile.TemporaryDirectory(prefix="etp-bench-store-") as scratch:
        url = database_url or database_url_for(Path(scratch))
        result = asyncio.run(run_store_benchmark(url, trades=trades, bids=bids))
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(f"store benchmark ({result.database})")
    rows = [
        ("trades/s (sequential, fsynced)", result.trades_per_s),
        ("trade commit p50 ms", result.trade_p50_ms),
        ("trade commit p99 ms", result.trade_p99_ms),
        ("trades/s (16 concurrent)", result.concurrent_trades_per_s),
        ("bids/s (batched)", result.bids_per_s),
        ("events/s (batched)", result.events_per_s),
        ("device upserts/s", result.device_upserts_per_s),
    ]
    for name, value in rows:
        typer.echo(f"  {name:<34} {value:>12,.1f}")


# ---- backup and restore (hub/ops/backup.py) -------------------------------------------------

_RESTORE_HELP = """Replace the database by a backup made with `etp db backup`.

Stop the hub first: a restore refuses while another process has the database open (SQLite:
its WAL lock; PostgreSQL: other sessions on the database). It refuses a database that holds
rows unless --force (back it up first), and a backup made by a newer etp (upgrade etp first).

The restored database keeps the backup's schema revision; it is not migrated here, so the
restore is exactly the backup. When that revision is older than this etp's, run
`etp db upgrade` (`etp hub` also migrates when it starts).
"""


def _size(size_bytes: int) -> str:
    if size_bytes < 1024 * 1024:
        return f"{size_bytes / 1024:.1f} KiB"
    return f"{size_bytes / (1024 * 1024):.1f} MiB"


def _print_summary(summary: Any, head: str) -> None:
    state = "head" if summary.revision == head else f"head is {head}"
    typer.echo(f"  revision  {summary.revision or 'none'} ({state})")
    for table, count in summary.row_counts.items():
        typer.echo(f"  {table:<9} {count:,}")


@app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="The backup file to write.", show_default=False)],
    force: Annotated[bool, typer.Option("--force", help="Replace PATH if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Write a consistent backup of the database to PATH while the hub may run.

    SQLite: sqlite3's online backup (one snapshot, the hub keeps writing) into a single file.
    PostgreSQL: `pg_dump --format=custom` (pg_dump on PATH or in /usr/lib/postgresql/*/bin, of
    the server's major version or newer). The file is written next to PATH, checked (integrity,
    schema revision) and renamed into place; prints its size, revision and row counts.
    """
    from hub.ops.backup import BackupError, backup_database
    from hub.store import head_revision

    url = resolve_url(database_url, data_dir)
    try:
        summary = backup_database(url, path, force=force)
    except BackupError as err:
        _fail(str(err))
        return
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        return
    kind = "SQLite, integrity ok" if summary.kind == "sqlite" else "pg_dump custom format"
    typer.echo(f"backup written: {summary.path} ({_size(summary.size_bytes)}, {kind})")
    _print_summary(summary, head_revision())


backup.__doc__ = unwrap_paragraphs(backup.__doc__)


@app.command(help=unwrap_paragraphs(_RESTORE_HELP))
def restore(
    path: Annotated[
        Path, typer.Argument(help="A backup made by `etp db backup`.", show_default=False)
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Replace a database that holds data.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    from hub.ops.backup import BackupError, restore_database

    url = resolve_url(database_url, data_dir)
    try:
        result = restore_database(url, path, force=force)
    except BackupError as err:
        _fail(str(err))
        return
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(f"restored {result.backup.path} into {result.database}")
    _print_summary(result.backup, result.head_revision)
    if result.needs_upgrade:
        typer.echo(
            f"the backup's schema ({result.backup.revision}) is older than this etp's "
            f"({result.head_revision}): run `etp db upgrade` before starting the hub"
        )
