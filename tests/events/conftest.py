"""Event log fixtures: a started Store and EventLog on a fresh database."""

from collections.abc import AsyncIterator

import pytest

from hub.events import EventLog
from hub.store import Store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A started store that writes queued rows only when asked (or on reads and close)."""
    opened = Store(database_url, flush_interval_s=3600)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def events(store: Store) -> AsyncIterator[EventLog]:
    """A started event log on `store`."""
    log = EventLog(store)
    await log.start()
    try:
        yield log
    finally:
        await log.stop()
