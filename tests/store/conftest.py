"""Store fixtures: a started store on a fresh database (SQLite and PostgreSQL)."""

from collections.abc import AsyncIterator

import pytest

from hub.store import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A started store on an empty database; flushes only when asked (deterministic tests)."""
    opened = Store(database_url, flush_interval_s=3600)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
