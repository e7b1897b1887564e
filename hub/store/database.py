"""The store's database: URL checks, the SQLAlchemy engine, migration at start, transactions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hub.store.errors import (
    InvalidValueError,
    StoreClosedError,
    StoreError,
    StoreNotStartedError,
    StoreWriteError,
)
from hub.store.migrate import upgrade_database

__all__ = ["Database"]

log = logging.getLogger("hub.store")


class Database:
    """One SQLite or PostgreSQL database: opened (and migrated) once, then shared by the
    store's parts for transactions and reads. SQLite allows one writer, so write
    transactions queue on an asyncio lock instead of spinning on the busy timeout."""

    def __init__(self, database_url: str, *, echo: bool = False, busy_timeout_ms: int = 10_000):
        try:
            self._url = make_url(database_url)
        except ArgumentError as err:
            raise InvalidValueError(
                f"not a database URL: {database_url!r} (expected e.g. "
                "sqlite+aiosqlite:///path/etp.db or postgresql+psycopg://user@host:port/db)"
            ) from err
        self.dialect = self._url.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidValueError(
                f"unsupported database {self.dialect!r} in {self.safe_url}: "
                "use sqlite+aiosqlite:// or postgresql+psycopg://"
            )
        self._echo = echo
        self._busy_timeout_ms = busy_timeout_ms
        self._engine: AsyncEngine | None = None
        self._disposed = False
        self.revision: str | None = None
        self.migrated_from: str | None = None
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.dialect == "sqlite" else None
        # INSERT ... ON CONFLICT of this dialect
        self.insert: Callable[[sa.Table], Any] = (
            pg_dialect.insert if self.dialect == "postgresql" else sqlite_dialect.insert
        )

    @property
    def safe_url(self) -> str:
        """The database URL with any password hidden (for logs and messages)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def opened(self) -> bool:
        """True between `open()` and `dispose()`."""
        return self._engine is not None

    @property
    def engine(self) -> AsyncEngine:
        """The SQLAlchemy async engine; raises until `open()` has run."""
        if self._engine is None:
            if self._disposed:
                raise StoreClosedError("the Store is closed")
            raise StoreNotStartedError("Store.start() has not been awaited yet")
        return self._engine

    async def open(self) -> None:
        """Create the engine and migrate the schema to the newest revision."""
        if self._disposed:
            raise StoreClosedError("this Store was closed; create a new one")
        if self._engine is not None:
            return
        engine_args: dict[str, Any] = {"echo": self._echo}
        if self.dialect == "sqlite":
            database = self._url.database
            if database and database != ":memory:" and not database.startswith("file:"):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine_args["connect_args"] = {"timeout": self._busy_timeout_ms / 1000}
        else:
            engine_args["pool_pre_ping"] = True
        engine = create_async_engine(self._url, **engine_args)
        if self.dialect == "sqlite":
            sa_event.listen(engine.sync_engine, "connect", self._sqlite_on_connect)
        try:
            self.migrated_from, self.revision = await upgrade_database(engine)
        except (SQLAlchemyError, OSError) as err:
            await engine.dispose()
            raise StoreError(f"cannot open or migrate the database {self.safe_url}: {err}") from err
        self._engine = engine

    def _sqlite_on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    async def dispose(self) -> None:
        """Close every connection; the database cannot be used afterwards."""
        self._disposed = True
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        """One committed write transaction (serialised in-process on SQLite).

        IntegrityError/DataError pass through (the data is wrong: callers decide); any other
        database or OS failure becomes StoreWriteError.
        """
        engine = self.engine
        try:
            if self._write_lock is None:
                async with engine.begin() as connection:
                    yield connection
            else:
                async with self._write_lock, engine.begin() as connection:
                    yield connection
        except (IntegrityError, DataError):
            raise
        except (SQLAlchemyError, OSError) as err:
            raise StoreWriteError(f"write to {self.safe_url} failed: {err}") from err

    async def fetch(self, statement: sa.Executable) -> Sequence[sa.Row[Any]]:
        """Run a read-only statement; all its rows."""
        async with self.engine.connect() as connection:
            result = await connection.execute(statement)
            return result.fetchall()
