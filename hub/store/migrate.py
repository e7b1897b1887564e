"""Programmatic Alembic: upgrade a database to the newest schema and read its revision."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "MIGRATIONS_DIR",
    "current_revision",
    "downgrade_database",
    "head_revision",
    "migration_config",
    "upgrade_database",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that serialises migrations of hub workers starting together.
_PG_MIGRATION_LOCK = 0x45545001
# Alembic keeps its running context in module globals: one migration at a time per process
# (one lock per event loop, as asyncio locks belong to the loop they are used in).
_process_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def _migration_lock() -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    lock = _process_locks.get(loop)
    if lock is None:
        lock = _process_locks[loop] = asyncio.Lock()
    return lock


def migration_config(connection: Connection | None = None) -> Config:
    """Alembic Config pointing at the store's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision the code knows."""
    head = ScriptDirectory.from_config(migration_config()).get_current_head()
    assert head is not None, "hub/store/migrations/versions holds no revision"
    return head


def _upgrade_sync(connection: Connection, revision: str) -> tuple[str | None, str | None]:
    # Serialise workers of other processes; held until this transaction ends, after which a
    # waiting worker finds nothing left to do.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock; DDL in one txn
    before = MigrationContext.configure(connection).get_current_revision()
    command.upgrade(migration_config(connection), revision)
    return before, MigrationContext.configure(connection).get_current_revision()


def _downgrade_sync(connection: Connection, revision: str) -> str | None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.downgrade(migration_config(connection), revision)
    return MigrationContext.configure(connection).get_current_revision()


def _current_sync(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def upgrade_database(
    engine: AsyncEngine, revision: str = "head"
) -> tuple[str | None, str | None]:
    """Run Alembic migrations up to `revision` (SQLite or PostgreSQL).

    Returns (revision before, revision after); before is None for an empty database.
    """
    async with _migration_lock(), engine.begin() as connection:
        return await connection.run_sync(_upgrade_sync, revision)


async def downgrade_database(engine: AsyncEngine, revision: str = "base") -> str | None:
    """Revert migrations down to `revision` ("base": drop every table); returns the revision."""
    async with _migration_lock(), engine.begin() as connection:
        return await connection.run_sync(_downgrade_sync, revision)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    async with engine.connect() as connection:
        return await connection.run_sync(_current_sync)
