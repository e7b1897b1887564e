"""The one rule for the hub's database URL: the URL given, else SQLite `etp.db` in the data dir."""

from __future__ import annotations

from pathlib import Path

__all__ = ["database_url_for", "resolve_database_url"]


def database_url_for(data_dir: Path) -> str:
    """The default database of a data directory: SQLite file `<data_dir>/etp.db` via aiosqlite."""
    return f"sqlite+aiosqlite:///{Path(data_dir).expanduser().resolve() / 'etp.db'}"


def resolve_database_url(database_url: str | None, data_dir: Path) -> str:
    """`database_url` when one is given (non-empty), else the data directory's SQLite file."""
    return database_url if database_url else database_url_for(data_dir)
