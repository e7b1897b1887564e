"""Backup and restore of the hub's database: SQLite through sqlite3's online backup API,
PostgreSQL through pg_dump / pg_restore (custom format).

A backup is consistent (one read snapshot: SQLite's read transaction in WAL mode, the exported
snapshot pg_dump runs in), written to a temporary file next to PATH, verified, then renamed
into place: PATH is either the previous file or a complete, checked backup. The summary counts
rows of the same snapshot. A restore refuses what would lose data by surprise: a database that
holds rows (without force), a backup made by a newer etp (its schema revision unknown here),
a database another process has open (a running hub). Passwords go to child processes through
their environment (PGPASSWORD), never on a command line, never in a message.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import shutil
import sqlite3
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

__all__ = [
    "COUNTED_TABLES",
    "BackupError",
    "BackupSummary",
    "RestoreRefusedError",
    "RestoreSummary",
    "backup_database",
    "inspect_backup",
    "restore_database",
]

COUNTED_TABLES = ("trades", "auctions", "events")
# Tables whose rows do not make a database "non-empty": the schema's own bookkeeping.
_BOOKKEEPING_TABLES = frozenset({"alembic_version", "event_sequence"})
_SQLITE_MAGIC = b"SQLite format 3\x00"
_PG_DUMP_MAGIC = b"PGDMP"
_TOOL_TIMEOUT_S = 3600.0
_PG_LIB_GLOB = "/usr/lib/postgresql/*/bin"
# The unix VFS of SQLite holds a shared lock on this byte of the -shm file while a connection
# has a WAL database open ("DMS" slot: 120 + 8 lock bytes).
_SQLITE_SHM_DMS_BYTE = 128


class BackupError(RuntimeError):
    """A backup or restore cannot be made; the message says what to do."""


class RestoreRefusedError(BackupError):
    """A restore would overwrite data or the backup does not fit this etp (force or upgrade)."""


@dataclass(frozen=True)
class BackupSummary:
    """What a backup file holds: schema revision and row counts of the counted tables."""

    path: Path
    kind: str  # "sqlite" or "postgresql"
    size_bytes: int
    revision: str | None
    row_counts: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for --json)."""
        return {
            "path": str(self.path),
            "kind": self.kind,
            "size_bytes": self.size_bytes,
            "revision": self.revision,
            "row_counts": dict(self.row_counts),
        }


@dataclass(frozen=True)
class RestoreSummary:
    """A finished restore: what was restored and whether the schema must be upgraded."""

    backup: BackupSummary
    database: str  # the URL with the password hidden
    head_revision: str

    @property
    def needs_upgrade(self) -> bool:
        """The restored schema is older than this etp's: `etp db upgrade` brings it to head."""
        return self.backup.revision != self.head_revision

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (for --json)."""
        return {
            "backup": self.backup.as_dict(),
            "database": self.database,
            "head_revision": self.head_revision,
            "needs_upgrade": self.needs_upgrade,
        }


# ---- shared --------------------------------------------------------------------------------


def _parse(database_url: str) -> URL:
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise BackupError(f"not a database URL: {database_url!r}") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise BackupError(f"unsupported database {url.get_backend_name()!r}: SQLite or PostgreSQL")
    return url


def _safe(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def known_revisions() -> tuple[set[str], str]:
    """Every schema revision this etp knows, and the newest (head)."""
    from alembic.script import ScriptDirectory

    from hub.store.migrate import head_revision, migration_config

    script = ScriptDirectory.from_config(migration_config())
    return {rev.revision for rev in script.walk_revisions()}, head_revision()


def _check_revision_known(summary: BackupSummary) -> None:
    known, head = known_revisions()
    if summary.revision is None:
        raise RestoreRefusedError(
            f"{summary.path} holds no schema revision (alembic_version): it is not a backup "
            "of an ETP database"
        )
    if summary.revision not in known:
        raise RestoreRefusedError(
            f"{summary.path} was made by a newer etp (schema revision {summary.revision}; this "
            f"etp knows up to {head}): upgrade etp first, then restore"
        )


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_next_to(path: Path) -> Path:
    """An empty file beside `path`, readable by its owner only from the start (a backup holds
    password hashes and every trade)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()
    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    return temp


def _prepare_target(path: Path, force: bool) -> None:
    if path.is_dir():
        raise BackupError(f"{path} is a directory: give the backup file's path")
    if path.exists() and not force:
        raise BackupError(f"{path} exists: choose another name, or --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)


def _file_kind(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        raise BackupError(f"no backup at {path}") from None
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head.startswith(_SQLITE_MAGIC):
        return "sqlite"
    if head.startswith(_PG_DUMP_MAGIC):
        return "postgresql"
    raise BackupError(
        f"{path} is neither a SQLite backup nor a pg_dump custom archive (made by `etp db backup`)"
    )


def backup_database(database_url: str, path: Path, *, force: bool = False) -> BackupSummary:
    """Write a consistent, verified backup of the database at `database_url` to `path`
    (atomically: a temp file renamed into place); refuses an existing `path` unless `force`."""
    url = _parse(database_url)
    path = Path(path).expanduser().absolute()
    _prepare_target(path, force)
    if url.get_backend_name() == "sqlite":
        return _sqlite_backup(_sqlite_path(url), path)
    return _pg_backup(url, path)


def inspect_backup(path: Path) -> BackupSummary:
    """Read a backup file's revision (and, for SQLite, check its integrity and count rows)."""
    path = Path(path).expanduser().absolute()
    if _file_kind(path) == "sqlite":
        return _sqlite_inspect(path)
    return _pg_inspect(path, _pg_tools(None))


def restore_database(database_url: str, path: Path, *, force: bool = False) -> RestoreSummary:
    """Replace the database at `database_url` by the backup at `path`.

    Refuses (RestoreRefusedError) a backup of a newer schema, a database another process has
    open, and, unless `force`, a database holding rows. The restored schema keeps the backup's
    revision: `needs_upgrade` tells whether `etp db upgrade` must bring it to head.
    """
    url = _parse(database_url)
    path = Path(path).expanduser().absolute()
    kind = _file_kind(path)
    backend = url.get_backend_name()
    if kind != backend:
        raise BackupError(
            f"{path} is a {_KIND_NAMES[kind]} backup but the database is {_KIND_NAMES[backend]} "
            f"({_safe(url)}): restore it into a database of the same kind"
        )
    if backend == "sqlite":
        summary = _sqlite_restore(_sqlite_path(url), path, force)
    else:
        summary = _pg_restore(url, path, force)
    _known, head = known_revisions()
    return RestoreSummary(backup=summary, database=_safe(url), head_revision=head)


_KIND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


# ---- SQLite ----------------------------------------------------------------------------------


def _sqlite_path(url: URL) -> Path:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"{_safe(url)} is not a SQLite file: nothing to back up or restore")
    return Path(database).expanduser().absolute()


def _sqlite_facts(connection: sqlite3.Connection) -> tuple[str | None, dict[str, int]]:
    tables = {
        row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    revision = None
    if "alembic_version" in tables:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
    counts = {
        table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        for table in COUNTED_TABLES
        if table in tables
    }
    return revision, counts


def _sqlite_check_integrity(connection: sqlite3.Connection, what: Path) -> None:
    problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
    if problems != ["ok"]:
        raise BackupError(f"{what} fails SQLite's integrity check: {'; '.join(problems[:3])}")


@contextlib.contextmanager
def _sqlite_connect(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        if read_only:
            connection = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=10)
        else:
            connection = sqlite3.connect(path, timeout=10)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None
    try:
        yield connection
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path}: {exc}") from None
    finally:
        connection.close()


def _sqlite_copy(source: sqlite3.Connection, target: Path) -> None:
    """One backup step over the whole database: a single read snapshot of `source` (in WAL
    mode writers go on meanwhile), written to `target` as a self-contained file."""
    with _sqlite_connect(target) as copy:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
        copy.commit()
    _fsync_file(target)


def _sqlite_backup(database: Path, path: Path) -> BackupSummary:
    if not database.is_file():
        raise BackupError(f"no database at {database}: nothing to back up (`etp db upgrade`)")
    temp = _temp_next_to(path)
    try:
        with _sqlite_connect(database) as source:
            _sqlite_copy(source, temp)
        summary = _sqlite_inspect(temp)
        os.replace(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(path.parent)
    return BackupSummary(path, "sqlite", path.stat().st_size, summary.revision, summary.row_counts)


def _sqlite_inspect(path: Path) -> BackupSummary:
    with _sqlite_connect(path, read_only=True) as connection:
        try:
            _sqlite_check_integrity(connection, path)
            revision, counts = _sqlite_facts(connection)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{path} is not a readable SQLite database: {exc}") from None
    return BackupSummary(path, "sqlite", path.stat().st_size, revision, counts)


def _sqlite_open_elsewhere(database: Path) -> bool:
    """True when some connection holds the WAL database open (its lock on the -shm file),
    this process's included (an open-file-description lock test sees those too)."""
    shm = database.with_name(database.name + "-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot look: assume in use rather than pull a file from under a hub
    try:
        request = struct.pack("hhxxxxqqi4x", fcntl.F_WRLCK, os.SEEK_SET, _SQLITE_SHM_DMS_BYTE, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, request)
        lock_type = struct.unpack("hhxxxxqqi4x", answer)[0]
        return bool(lock_type != fcntl.F_UNLCK)
    except OSError:
        return True
    finally:
        os.close(fd)


def _sqlite_has_rows(database: Path) -> dict[str, int]:
    if not database.is_file():
        return {}
    with _sqlite_connect(database) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
            if row[0] not in _BOOKKEEPING_TABLES
        ]
        counts = {
            table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
            for table in tables
        }
    return {table: count for table, count in counts.items() if count}


def _refuse_non_empty(rows: dict[str, int], where: str) -> None:
    shown = ", ".join(f"{table} {count:,}" for table, count in sorted(rows.items())[:4])
    raise RestoreRefusedError(
        f"{where} holds data ({shown}): `etp db restore --force` replaces it "
        "(make a backup of it first with `etp db backup`)"
    )


def _sqlite_restore(database: Path, path: Path, force: bool) -> BackupSummary:
    summary = _sqlite_inspect(path)
    _check_revision_known(summary)
    if _sqlite_open_elsewhere(database):
        raise RestoreRefusedError(
            f"{database} is open in another process (a running hub?): stop it "
            "(`systemctl stop etp-hub`, or Ctrl-C), then restore"
        )
    rows = _sqlite_has_rows(database)
    if rows and not force:
        _refuse_non_empty(rows, str(database))
    database.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_next_to(database)
    try:
        with _sqlite_connect(path, read_only=True) as source:
            _sqlite_copy(source, temp)
        # A -wal left by a hub that stopped uncleanly belongs to the database being replaced:
        # SQLite would replay it onto the restored file.
        for suffix in ("-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                database.with_name(database.name + suffix).unlink()
        os.replace(temp, database)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(database.parent)
    return summary


# ---- PostgreSQL ------------------------------------------------------------------------------

_LIBPQ_QUERY_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "host": "PGHOST",  # ?host=/run/postgresql: a unix socket directory
}


def _libpq_env(url: URL) -> dict[str, str]:
    """The child's environment: the connection in PG* variables (the password included, so
    it is on no command line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if url.host:
        env["PGHOST"] = url.host
    if url.port:
        env["PGPORT"] = str(url.port)
    if url.username:
        env["PGUSER"] = url.username
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    if url.database:
        env["PGDATABASE"] = url.database
    for key, variable in _LIBPQ_QUERY_ENV.items():
        value = url.query.get(key)
        if isinstance(value, str):
            env[variable] = value
    return env


def _pg_connect(url: URL, **options: Any) -> Any:
    import psycopg

    params: dict[str, Any] = {"dbname": url.database, "connect_timeout": 10}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    if url.username:
        params["user"] = url.username
    if url.password is not None:
        params["password"] = str(url.password)
    for key in _LIBPQ_QUERY_ENV:
        value = url.query.get(key)
        if isinstance(value, str):
            params[key] = value
    try:
        return psycopg.connect(**params, **options)
    except psycopg.Error as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackupError(f"cannot connect to {_safe(url)}: {message}") from None


@dataclass(frozen=True)
class _PgTools:
    bin_dir: Path
    major: int

    def path(self, tool: str) -> str:
        return str(self.bin_dir / tool)


def _tool_major(binary: str) -> int | None:
    try:
        done = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)", done.stdout)
    return int(match.group(1)) if match else None


def _pg_tools(server_major: int | None) -> _PgTools:
    """pg_dump and pg_restore of one installation: the one on PATH, else the newest in
    /usr/lib/postgresql/*/bin; its major version at least the server's."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_dump")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    installed = sorted(
        (Path(found) for found in glob.glob(_PG_LIB_GLOB)),
        key=lambda directory: int(directory.parent.name) if directory.parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates += installed
    seen: list[str] = []
    for directory in candidates:
        if not (directory / "pg_dump").exists() or not (directory / "pg_restore").exists():
            continue
        major = _tool_major(str(directory / "pg_dump"))
        if major is None:
            continue
        seen.append(f"{directory / 'pg_dump'} ({major})")
        if server_major is None or major >= server_major:
            return _PgTools(directory, major)
    if not seen:
        raise BackupError(
            "pg_dump / pg_restore not found on PATH or in /usr/lib/postgresql/*/bin: install "
            "PostgreSQL's client tools (Debian: apt install postgresql-client)"
        )
    raise BackupError(
        f"the server runs PostgreSQL {server_major} but the pg_dump found is older "
        f"({', '.join(seen)}): install the client tools of version {server_major} or newer "
        f"(Debian: apt install postgresql-client-{server_major})"
    )


def _run_tool(argv: list[str], env: dict[str, str], what: str) -> str:
    try:
        done = subprocess.run(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TOOL_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackupError(f"{what} failed: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()
        raise BackupError(f"{what} failed ({done.returncode}): {' / '.join(detail[-3:])}")
    return done.stdout


def _pg_backup(url: URL, path: Path) -> BackupSummary:
    import psycopg

    connection = _pg_connect(url)
    temp = _temp_next_to(path)
    try:
        tools = _pg_tools(connection.info.server_version // 10000)
        connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        connection.read_only = True
        # The counts and pg_dump read the same snapshot: this transaction stays open meanwhile.
        snapshot = connection.execute("SELECT pg_export_snapshot()").fetchone()[0]
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        }
        revision = None
        if "alembic_version" in tables:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
            revision = row[0] if row else None
        counts = _pg_counts(connection)
        _run_tool(
            [
                tools.path("pg_dump"),
                "--format=custom",
                f"--snapshot={snapshot}",
                f"--file={temp}",
                "--no-password",
            ],
            _libpq_env(url),
            "pg_dump",
        )
        connection.rollback()
        _fsync_file(temp)
        checked = _pg_inspect(temp, tools)
        if checked.revision != revision:
            raise BackupError(
                f"the dump reads revision {checked.revision}, the database {revision}: "
                "the backup was not kept"
            )
        os.replace(temp, path)
    finally:
        connection.close()
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
    _fsync_dir(path.parent)
    return BackupSummary(path, "postgresql", path.stat().st_size, revision, counts)


def _pg_archive_tables(path: Path, tools: _PgTools) -> set[str]:
    listing = _run_tool(
        [tools.path("pg_restore"), "--list", str(path)], dict(os.environ), "pg_restore --list"
    )
    tables = set()
    for line in listing.splitlines():
        match = re.match(r"^\d+; \d+ \d+ TABLE \S+ (\S+) ", line)
        if match:
            tables.add(match.group(1))
    return tables


def _pg_archive_copy(path: Path, tools: _PgTools, table: str) -> list[list[str]]:
    """The rows of one table in the archive (COPY text format, split on tabs)."""
    script = _run_tool(
        [tools.path("pg_restore"), "--data-only", f"--table={table}", "--file=-", str(path)],
        dict(os.environ),
        "pg_restore",
    )
    rows: list[list[str]] = []
    inside = False
    for line in script.splitlines():
        if line.startswith("COPY "):
            inside = True
            continue
        if inside:
            if line == "\\.":
                break
            rows.append(line.split("\t"))
    return rows


def _pg_inspect(path: Path, tools: _PgTools) -> BackupSummary:
    """The archive's revision (reading its table of contents fails on a damaged archive); row
    counts are not read from the archive (a table's whole data would be decoded)."""
    tables = _pg_archive_tables(path, tools)
    revision = None
    if "alembic_version" in tables:
        rows = _pg_archive_copy(path, tools, "alembic_version")
        revision = rows[0][0] if rows else None
    return BackupSummary(path, "postgresql", path.stat().st_size, revision, {})


def _pg_counts(connection: Any) -> dict[str, int]:
    tables = {
        row[0]
        for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        )
    }
    return {
        table: int(connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0])
        for table in COUNTED_TABLES
        if table in tables
    }


def _pg_restore(url: URL, path: Path, force: bool) -> BackupSummary:
    connection = _pg_connect(url, autocommit=True)
    try:
        tools = _pg_tools(connection.info.server_version // 10000)
        summary = _pg_inspect(path, tools)
        _check_revision_known(summary)
        others = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchone()[0]
        if others:
            raise RestoreRefusedError(
                f"{others} other connection(s) to {_safe(url)} (a running hub?): stop every "
                "hub worker using it, then restore"
            )
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
            )
        ]
        rows = {}
        for table in tables:
            if table in _BOOKKEEPING_TABLES:
                continue
            count = connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
            if count:
                rows[table] = int(count)
        if rows and not force:
            _refuse_non_empty(rows, _safe(url))
        # Tables of a newer schema than the backup's are not in the archive, so --clean would
        # leave them; `etp db upgrade` would then fail to create them again.
        extra = sorted(set(tables) - _pg_archive_tables(path, tools))
        if extra:
            with connection.transaction():
                for table in extra:
                    connection.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    finally:
        connection.close()
    _run_tool(
        [
            tools.path("pg_restore"),
            "--clean",
            "--if-exists",
            "--no-owner",
            "--no-privileges",
            "--single-transaction",
            "--exit-on-error",
            "--no-password",
            f"--dbname={url.database}",
            str(path),
        ],
        _libpq_env(url),
        "pg_restore",
    )
    connection = _pg_connect(url, autocommit=True)
    try:
        counts = _pg_counts(connection)
    finally:
        connection.close()
    return BackupSummary(path, "postgresql", summary.size_bytes, summary.revision, counts)
