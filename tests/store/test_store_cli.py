"""`etp db upgrade`, `etp db current` and `etp bench store` as a user runs them."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from hub.store import head_revision

ETP = str(Path(sys.executable).with_name("etp"))
# The checkout under test, first on the path: the venv's `etp` may be installed from another one.
REPO_ROOT = str(Path(__file__).resolve().parents[2])


def etp(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
    return subprocess.run(
        [ETP, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "PYTHONPATH": REPO_ROOT, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def test_db_upgrade_on_a_fresh_data_dir_is_idempotent(tmp_path: Path):
    data_dir = tmp_path / "fresh" / "data"
    head = head_revision()

    before = etp("db", "current", "--data-dir", str(data_dir))
    assert before.returncode == 0, before.stderr
    assert before.stdout.startswith("none")

    first = etp("db", "upgrade", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"{head} (upgraded from empty)")
    assert (data_dir / "etp.db").exists()

    second = etp("db", "upgrade", "--data-dir", str(data_dir))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"{head} (already up to date)")

    now = etp("db", "current", "--data-dir", str(data_dir))
    assert now.returncode == 0, now.stderr
    assert now.stdout.startswith(f"{head} (head {head}: up to date)")


def test_db_upgrade_reads_the_environment(tmp_path: Path):
    from_data_dir = etp("db", "upgrade", env={"ETP_DATA_DIR": str(tmp_path / "env")})
    assert from_data_dir.returncode == 0, from_data_dir.stderr
    assert (tmp_path / "env" / "etp.db").exists()

    url = f"sqlite+aiosqlite:///{tmp_path / 'by-url.db'}"
    from_url = etp("db", "upgrade", env={"ETP_DATABASE_URL": url})
    assert from_url.returncode == 0, from_url.stderr
    assert (tmp_path / "by-url.db").exists()
    assert not (tmp_path / "env" / "by-url.db").exists()


@pytest.mark.postgres
def test_db_upgrade_on_postgresql_is_idempotent(postgres_url: str):
    from tests.pg import create_database

    url = create_database(postgres_url, "cli_upgrade")
    first = etp("db", "upgrade", env={"ETP_DATABASE_URL": url})
    assert first.returncode == 0, first.stderr
    assert "upgraded from empty" in first.stdout and "postgresql" in first.stdout
    second = etp("db", "upgrade", "--database-url", url)
    assert second.returncode == 0, second.stderr
    assert "already up to date" in second.stdout
    assert etp("db", "current", "--database-url", url).stdout.startswith(head_revision())


def test_db_upgrade_explains_a_bad_url():
    result = etp("db", "upgrade", "--database-url", "mysql://localhost/etp")
    assert result.returncode != 0
    assert "unsupported database 'mysql'" in result.stderr


@pytest.mark.slow
def test_bench_store_prints_throughput():
    result = etp("bench", "store", "--trades", "20", "--bids", "2000", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["database"] == "sqlite"
    assert report["trades"] == 20 and report["bids"] == 2000
    for key in ("trades_per_s", "concurrent_trades_per_s", "bids_per_s", "events_per_s"):
        assert report[key] > 0


def test_concurrent_upgrades_of_one_fresh_database_all_succeed(tmp_path: Path):
    """Hub workers (separate processes) starting together on one new database."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
    clean["PYTHONPATH"] = REPO_ROOT
    upgrades = [
        subprocess.Popen(
            [ETP, "db", "upgrade", "--data-dir", str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean,
        )
        for _ in range(4)
    ]
    outputs = [upgrade.communicate(timeout=120) for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0] * 4, outputs
    head = head_revision()
    assert all(stdout.startswith(head) for stdout, _ in outputs)
    assert sum("upgraded from empty" in stdout for stdout, _ in outputs) == 1


def test_db_upgrade_reports_an_unreachable_server():
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/etp"
    result = etp("db", "upgrade", "--database-url", url)
    assert result.returncode == 1
    assert "cannot open or migrate the database" in result.stderr
    assert "Connection refused" in result.stderr
