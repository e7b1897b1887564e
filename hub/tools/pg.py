"""Throwaway PostgreSQL 15 servers for tests and `etp bench hub --workers`:
`with postgres_server() as url: ...`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hub.tools.ports import free_port

__all__ = [
    "PG_BIN",
    "PostgresUnavailable",
    "create_database",
    "postgres_missing_reason",
    "postgres_server",
]

PG_BIN = Path(os.environ.get("ETP_PG_BIN", "/usr/lib/postgresql/15/bin"))
RUN_AS = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started on this machine (the message says why)."""


def postgres_missing_reason() -> str | None:
    """Why a throwaway server cannot run here, or None when it can."""
    for tool in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / tool).exists():
            return f"PostgreSQL binaries not found: {PG_BIN / tool} (bash scripts/setup.sh)"
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            return "running as root and `runuser` is missing: postgres refuses to run as root"
        try:
            import pwd

            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root and there is no `{RUN_AS}` user to run the server as"
    return None


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", RUN_AS, "--", *argv]
    return argv


def _run(argv: list[str], what: str, timeout_s: float = 60) -> None:
    done = subprocess.run(
        _as_server_user(argv),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if done.returncode != 0:
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stderr.strip()}")


def create_database(url: str, name: str) -> str:
    """Create database `name` on the server of `url`; returns the URL of the new database."""
    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(url)
    with psycopg.connect(
        host=server.host, port=server.port, user=server.username, dbname="postgres", autocommit=True
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
    return server.set(database=name).render_as_string(hide_password=False)


@contextmanager
def postgres_server(database: str = "etp", *, start_timeout_s: float = 60) -> Iterator[str]:
    """Start a PostgreSQL server on 127.0.0.1:<free port>; yield the URL of database `database`.

    The cluster lives in a temp dir (owned by the `postgres` user when running as root), uses
    trust auth, and is stopped (`pg_ctl stop -m immediate`) and deleted on exit. Raises
    PostgresUnavailable if it cannot start; tests call `postgres_missing_reason()` to skip.
    """
    reason = postgres_missing_reason()
    if reason is not None:
        raise PostgresUnavailable(reason)
    root = Path(tempfile.mkdtemp(prefix="etp-pg-"))
    data_dir = root / "data"
    if os.geteuid() == 0:
        root.chmod(0o755)
        shutil.chown(root, user=RUN_AS, group=RUN_AS)
    started = False
    try:
        _run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        for attempt in range(5):
            port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -c port={port} "
                f"-c unix_socket_directories={root} -c fsync=on "
                "-c max_connections=50 -c shared_buffers=32MB"
            )
            try:
                _run(
                    [
                        str(PG_BIN / "pg_ctl"),
                        "start",
                        "-D",
                        str(data_dir),
                        "-l",
                        str(root / "server.log"),
                        "-o",
                        options,
                        "-w",
                        "-t",
                        str(int(start_timeout_s)),
                    ],
                    "pg_ctl start",
                    timeout_s=start_timeout_s + 10,
                )
            except PostgresUnavailable:
                log_text = (root / "server.log").read_text(errors="replace")
                if "could not bind" in log_text and attempt < 4:
                    continue  # another process took the port between probe and bind
                raise PostgresUnavailable(f"postgres did not start; its log:\n{log_text[-2000:]}")
            started = True
            break
        base = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        url = create_database(base, database)
        yield url
    finally:
        if started:
            subprocess.run(
                _as_server_user(
                    [str(PG_BIN / "pg_ctl"), "stop", "-D", str(data_dir), "-m", "immediate", "-w"]
                ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # manual check: python tests/pg.py
    started_at = time.monotonic()
    with postgres_server() as server_url:
        print(server_url, f"started in {time.monotonic() - started_at:.2f} s")
