"""Shared test fixtures: paths to the repo, the MicroPython unix port, empty databases."""

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hub.store import Store, database_url_for
from hub.tools.firmware.binaries import ToolNotFoundError, micropython_binary
from tests.pg import create_database, postgres_missing_reason, postgres_server

REPO = Path(__file__).resolve().parents[1]


def micropython_available() -> bool:
    """True when the MicroPython unix port is found (hub.tools.firmware.binaries decides)."""
    try:
        micropython_binary()
    except ToolNotFoundError:
        return False
    return True


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def micropython() -> str:
    try:
        return micropython_binary()
    except ToolNotFoundError as exc:
        pytest.skip(f"the MicroPython unix port is not available: {exc}")


_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server shared by this session's tests (skips if unavailable)."""
    reason = postgres_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with postgres_server() as url:
        yield url


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: SQLite file in tmp_path, or a new database on the test server."""
    if request.param == "sqlite":
        return database_url_for(tmp_path)
    server_url = request.getfixturevalue("postgres_url")
    return create_database(server_url, f"test_db_{next(_database_numbers)}")


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A started store on an empty database; flushes only when asked (deterministic tests)."""
    opened = Store(database_url, flush_interval_s=3600)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()
