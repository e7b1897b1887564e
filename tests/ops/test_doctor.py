"""`etp doctor` against real deployments: a running hub on TLS Mosquitto with a password
(healthy), and broken ones (unmigrated database, a key others can read, broker down, wrong
password), run as a user runs it (a child process, its --json output and exit code)."""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hub.security.accounts import hash_password
from hub.security.broker import PASSWORD_FILE
from hub.security.pki import site_pki
from hub.settings import load_master_secret
from hub.store import Store, database_url_for
from tests.brokers import free_port, mosquitto_available, mosquitto_secure_broker
from tests.hub.processes import HubProcess
from tests.pg import create_database

REPO = Path(__file__).resolve().parents[2]
HUB_PASSWORD = "doctor-test-password"

pytestmark = pytest.mark.skipif(not mosquitto_available(), reason="mosquitto is not installed")


def _doctor(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]], str]:
    """`etp doctor --json` with only these ETP_* settings: exit code, checks by name, text."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
    done = subprocess.run(
        [sys.executable, "-m", "hub.cli.main", "doctor", "--json"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    report = json.loads(done.stdout)
    assert report["ok"] == (done.returncode == 0)
    return done.returncode, {check["name"]: check for check in report["checks"]}, done.stdout


def _site(tmp_path: Path) -> Path:
    """A data dir as a careful operator leaves it: 0700, `etp pki init`, a master secret."""
    data_dir = tmp_path / "site"
    data_dir.mkdir(mode=0o700)
    site_pki(data_dir).init()
    load_master_secret(data_dir / "master.key")
    return data_dir


async def _migrate(data_dir: Path) -> None:
    async with Store(database_url_for(data_dir)):
        pass


def _expected_exit(checks: dict[str, dict[str, Any]]) -> int:
    # The clock line depends on the machine (no timedatectl answer in a container: warn).
    return 1 if checks["clock"]["status"] == "FAIL" else 0


async def test_healthy_deployment_is_all_ok(tmp_path: Path) -> None:
    """A running hub (its embedded amqtt broker and gateway), migrated, keys 0600."""
    data_dir = _site(tmp_path)
    await _migrate(data_dir)
    env = {
        "ETP_DATA_DIR": str(data_dir),
        "ETP_MQTT_PORT": str(free_port()),
        "ETP_SETTLEMENT_NETWORK": "off",
    }
    hub = HubProcess(data_dir, "unused", **env)
    hub.env.pop("ETP_MQTT_URL")  # the embedded broker
    await hub.start()
    try:
        code, checks, text = await asyncio.to_thread(
            _doctor, {**env, "ETP_HTTP_PORT": str(hub.http_port)}
        )
        assert hub.ready()  # the doctor's probes did not disturb the running hub
    finally:
        await hub.kill(signal.SIGTERM)
    assert code == _expected_exit(checks), text
    not_ok = {name: c for name, c in checks.items() if c["status"] != "ok" and name != "clock"}
    assert not_ok == {}, text
    assert {
        "database",
        "data dir",
        "master secret",
        "key modes",
        "broker",
        "certificates",
        "ledger",
        "http gateway",
    } <= set(checks)
    assert "CONNACK accepted" in checks["broker"]["detail"]
    assert "ready" in checks["http gateway"]["detail"]


async def test_broken_deployment_fails_with_the_fix(tmp_path: Path) -> None:
    data_dir = _site(tmp_path)
    sqlite3.connect(data_dir / "etp.db").close()  # a database never migrated
    (data_dir / "master.key").chmod(0o644)
    env = {
        "ETP_DATA_DIR": str(data_dir),
        "ETP_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",  # nothing listens there
        "ETP_SETTLEMENT_NETWORK": "localnet",
        "ETP_SETTLEMENT_RPC_URL": f"http://127.0.0.1:{free_port()}/api-key-in-path",
        "ETP_HTTP_PORT": str(free_port()),  # no hub running
    }
    code, checks, text = await asyncio.to_thread(_doctor, env)
    assert code == 1, text
    assert checks["database"]["status"] == "FAIL"
    assert "never migrated" in checks["database"]["detail"]
    assert checks["database"]["fix"] == "etp db upgrade"
    assert checks["key modes"]["status"] == "FAIL"
    assert checks["key modes"]["fix"] == f"chmod 600 {data_dir / 'master.key'}"
    assert checks["broker"]["status"] == "FAIL"
    assert "cannot connect" in checks["broker"]["detail"]
    assert "start the broker" in checks["broker"]["fix"]
    assert checks["ledger"]["status"] == "FAIL"
    assert "ETP_SETTLEMENT_RPC_URL" in checks["ledger"]["fix"]
    assert "api-key-in-path" not in text
    assert checks["http gateway"]["status"] == "FAIL"
    assert "start the hub" in checks["http gateway"]["fix"]


async def test_wrong_broker_password_fails_naming_the_setting(tmp_path: Path) -> None:
    data_dir = _site(tmp_path)
    await _migrate(data_dir)
    async with mosquitto_secure_broker({"hub": HUB_PASSWORD}) as broker:
        env = {
            "ETP_DATA_DIR": str(data_dir),
            "ETP_MQTT_URL": broker.url,
            "ETP_MQTT_CA_FILE": str(broker.ca_file),
            "ETP_MQTT_USERNAME": "hub",
            "ETP_MQTT_PASSWORD": "not-the-password",
            "ETP_SETTLEMENT_NETWORK": "off",
            "ETP_HTTP_ENABLED": "false",
        }
        code, checks, text = await asyncio.to_thread(_doctor, env)
        assert code == 1, text
        assert checks["broker"]["status"] == "FAIL"
        assert "refused the connection" in checks["broker"]["detail"]
        assert "ETP_MQTT_PASSWORD" in checks["broker"]["fix"]
        assert "not-the-password" not in text

        # The site's own account: checked against its password file, never logged in with.
        broker_dir = data_dir / "broker"
        broker_dir.mkdir(mode=0o750)
        (broker_dir / PASSWORD_FILE).write_text(f"hub:{hash_password(HUB_PASSWORD)}\n")
        code, checks, text = await asyncio.to_thread(_doctor, env)
        assert code == 1, text
        assert checks["broker login"]["status"] == "FAIL"
        assert "does not match the broker's password file" in checks["broker login"]["detail"]
        assert checks["broker"]["status"] == "ok"
        assert "anonymous clients refused" in checks["broker"]["detail"]

        code, checks, text = await asyncio.to_thread(
            _doctor, {**env, "ETP_MQTT_PASSWORD": HUB_PASSWORD}
        )
        assert checks["broker login"]["status"] == "ok", text
        assert code == _expected_exit(checks), text
        # TLS verified against the configured CA; the test broker's certificate lasts a day
        assert "TLS verified" in checks["broker"]["detail"]
        assert checks["broker certificate"]["status"] == "warn"
        assert "pki init --force" in checks["broker certificate"]["fix"]


@pytest.mark.postgres
async def test_postgresql_database_checked_for_migrations(
    tmp_path: Path, postgres_url: str
) -> None:
    database_url = create_database(postgres_url, "doctor_db")
    env = {
        "ETP_DATA_DIR": str(_site(tmp_path)),
        "ETP_DATABASE_URL": database_url,
        "ETP_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}",
        "ETP_SETTLEMENT_NETWORK": "off",
        "ETP_HTTP_ENABLED": "false",
    }
    _code, checks, text = await asyncio.to_thread(_doctor, env)
    assert checks["database"]["status"] == "FAIL", text
    assert "never migrated" in checks["database"]["detail"]
    assert checks["database"]["fix"] == "etp db upgrade"
    async with Store(database_url):
        pass
    _code, checks, text = await asyncio.to_thread(_doctor, env)
    assert checks["database"]["status"] == "ok", text
    assert "(head)" in checks["database"]["detail"]
