"""Throwaway PostgreSQL servers for tests: hub.tools.pg (the benchmarks use it too)."""

from hub.tools.pg import (
    PG_BIN,
    PostgresUnavailable,
    create_database,
    postgres_missing_reason,
    postgres_server,
)

__all__ = [
    "PG_BIN",
    "PostgresUnavailable",
    "create_database",
    "postgres_missing_reason",
    "postgres_server",
]
