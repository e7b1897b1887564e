"""Event log fixtures: a started EventLog on the shared `store` fixture (tests/conftest.py)."""

from collections.abc import AsyncIterator

import pytest

from hub.events import EventLog
from hub.store import Store


@pytest.fixture
async def events(store: Store) -> AsyncIterator[EventLog]:
    """A started event log on `store`."""
    log = EventLog(store)
    await log.start()
    try:
        yield log
    finally:
        await log.stop()
