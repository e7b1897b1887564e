"""Device provisioning: key generations and the hub's keyring (revoked, unprovisioned, rotated
with a grace window, which key the hub signs with), the credentials in the store (SQLite and
PostgreSQL), and `etp device add|rotate|revoke|list` with their bundles, events and output."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from hub.devices.keys import DeviceKeyring, DeviceReceiver, SenderPool, generation_key
from hub.security.accounts import verify_password
from hub.security.devices import OwnerError, broker_accounts, parse_owner
from hub.settings import Settings
from hub.store import DeviceCredentialError, Store
from shared_etp.errors import ProtocolError
from shared_etp.frame import Keyring, Sender, decode_frame, derive_key, derive_notice_key
from shared_etp.schema import BESS_STATUS, QUERY
from tests.hub.helpers import hub_settings, running_hub, wait_for

MASTER = bytes(range(32))
ETP = [sys.executable, "-m", "hub.cli.main"]
OWNER = "4Nd1mBQtrMJVYVfKf2PJy9NZUZdTAsp7D4xWLs4gDB4T"  # a valid base58 32-byte key


class _Row:
    """A credentials row as the keyring reads it (hub.store.DeviceCredentialRow's fields)."""

    def __init__(
        self, device_id: int, generation: int, state: str = "active", rotated_ms: int | None = None
    ) -> None:
        self.device_id = device_id
        self.key_generation = generation
        self.state = state
        self.rotated_ms = rotated_ms


def _status(device_id: int, key: bytes, seq: int = 0, ts: int | None = None) -> bytes:
    if ts is None:
        sender = Sender(device_id, device_id, key, 1000, seq=seq)
    else:
        sender = Sender(device_id, device_id, key, 1000, seq=seq, clock=lambda: ts)
    frame, _msg = sender.frame(BESS_STATUS, erem=1, health=0, volt=1, dis=0, soc=1)
    return frame


def test_generation_zero_is_the_pre_provisioning_key_and_others_differ() -> None:
    assert generation_key(MASTER, 5, 0) == derive_key(MASTER, 5)
    keys = {generation_key(MASTER, n, g) for n in (5, 6) for g in range(4)}
    assert len(keys) == 8  # every (device, generation) has its own key
    assert derive_key(MASTER, 0) not in keys  # nor any the notice key


def test_keyring_unprovisioned_revoked_and_required() -> None:
    keyring = DeviceKeyring(MASTER)
    assert keyring.verify(_status(3, derive_key(MASTER, 3)))[1] == 0  # as before provisioning
    keyring.load([_Row(3, 0, "revoked")])
    with pytest.raises(ProtocolError) as err:
        keyring.verify(_status(3, derive_key(MASTER, 3)))
    assert err.value.code == "revoked"
    strict = DeviceKeyring(MASTER, require_provisioning=True)
    strict.load([_Row(4, 0)])
    with pytest.raises(ProtocolError) as err:
        strict.verify(_status(3, derive_key(MASTER, 3)))
    assert err.value.code == "unknown_key"
    assert strict.verify(_status(4, derive_key(MASTER, 4)))[1] == 0
    with pytest.raises(ProtocolError) as err:  # a device's key used by another sender
        strict.verify(Sender(9, 4, derive_key(MASTER, 4), 1).frame(QUERY)[0])
    assert err.value.code == "unknown_key"


def test_rotation_grace_window_and_which_key_the_hub_signs_with() -> None:
    now = [1_000_000]
    keyring = DeviceKeyring(MASTER, grace_ms=300_000, clock=lambda: now[0])
    old, new = generation_key(MASTER, 2, 0), generation_key(MASTER, 2, 1)
    keyring.load([_Row(2, 0)])
    receiver = DeviceReceiver(keyring, clock=lambda: now[0])
    pool = SenderPool(keyring, epoch=7)
    board = Keyring()  # what the board holds
    board.add(2, old)
    seq = iter(range(1, 100))

    def board_accepts() -> bool:
        try:
            decode_frame(pool.get(0, 2).frame(QUERY)[0], board)
        except ProtocolError:
            return False
        return True

    def status(key: bytes) -> dict[str, int]:
        return receiver.open(_status(2, key, next(seq), now[0]))  # type: ignore[no-any-return]

    assert board_accepts()
    change = keyring.load([_Row(2, 1, rotated_ms=now[0])])
    assert change.rotated == (2,) and change.revoked == ()
    # the board still holds generation 0: accepted in the grace window, and signed to with it
    status(old)
    assert keyring.signing_generation(2) == 0 and board_accepts()
    # the board gets its bundle: its first frame under generation 1 switches the hub
    board.add(2, new)
    status(new)
    assert keyring.signing_generation(2) == 1 and board_accepts()
    status(old)  # a late frame under the old key, in flight: accepted...
    assert keyring.signing_generation(2) == 1  # ...and it does not switch the hub back
    now[0] += 300_001  # grace over: the old key is refused
    with pytest.raises(ProtocolError) as err:
        status(old)
    assert err.value.code == "bad_tag"
    assert status(new)["src"] == 2


def test_after_the_grace_window_the_hub_signs_with_the_new_key_unseen() -> None:
    now = [1_000_000]
    keyring = DeviceKeyring(MASTER, grace_ms=1000, clock=lambda: now[0])
    keyring.load([_Row(2, 3, rotated_ms=now[0])])
    assert keyring.signing_generation(2) == 2  # maybe still on the previous one
    now[0] += 1001
    assert keyring.signing_generation(2) == 3
    assert SenderPool(keyring, 1).get(0, 2).key == generation_key(MASTER, 2, 3)


def test_owner_is_a_32_byte_base58_key() -> None:
    assert parse_owner(OWNER) == OWNER
    assert parse_owner("11111111111111111111111111111111") == "11111111111111111111111111111111"
    for bad in ("abc", "0" * 44, "I" * 40, "z" * 44, "2" * 33):
        with pytest.raises(OwnerError):
            parse_owner(bad)


async def test_credentials_in_the_store(store: Store, tmp_path: Path) -> None:
    row = await store.provision_device("s1", 7, password_hash="$7$h1", owner=OWNER, at_ms=10)
    assert (row.state, row.key_generation, row.owner, row.created_ms) == ("active", 0, OWNER, 10)
    before = await store.device_credentials_fingerprint("s1")
    with pytest.raises(DeviceCredentialError, match="already provisioned"):
        await store.provision_device("s1", 7, password_hash="$7$x")
    row = await store.rotate_device_credentials("s1", 7, password_hash="$7$h2", at_ms=20)
    assert (row.key_generation, row.rotated_ms, row.broker_password_hash) == (1, 20, "$7$h2")
    rotated = await store.device_credentials_fingerprint("s1")
    assert rotated != before
    row, changed = await store.revoke_device_credentials("s1", 7, at_ms=30)
    assert changed and row.state == "revoked" and row.revoked_ms == 30
    row, changed = await store.revoke_device_credentials("s1", 7, at_ms=40)
    assert not changed and row.revoked_ms == 30  # the first time stays
    assert await store.device_credentials_fingerprint("s1") != rotated
    with pytest.raises(DeviceCredentialError, match="revoked"):
        await store.rotate_device_credentials("s1", 7, password_hash="$7$h3")
    with pytest.raises(DeviceCredentialError, match="not provisioned"):
        await store.revoke_device_credentials("s1", 8)
    # provisioned again: a new generation, never the revoked key
    row = await store.provision_device("s1", 7, password_hash="$7$h4", at_ms=50)
    assert (row.state, row.key_generation, row.rotated_ms, row.revoked_ms) == (
        "active",
        2,
        None,
        None,
    )
    await store.provision_device("s2", 7, password_hash="$7$other")  # other site, same id
    assert [r.site for r in await store.list_device_credentials()] == ["s1", "s2"]
    assert [r.key_generation for r in await store.list_device_credentials("s2")] == [0]
    settings = Settings(data_dir=tmp_path, site="s1")
    accounts = await broker_accounts(store, settings)
    assert [(a.username, a.device_id) for a in accounts] == [("hub", None), ("bess-7", 7)]
    hub_file = tmp_path / "broker-hub.password"
    assert stat.S_IMODE(hub_file.stat().st_mode) == 0o600
    assert verify_password(hub_file.read_text().strip(), accounts[0].password_hash)
    assert accounts[1].password_hash == "$7$h4"


# ---- the command line ----------------------------------------------------------------------


def etp(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `etp` with the test's data dir and database."""
    return subprocess.run(
        [*ETP, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_cli_add_rotate_revoke_list(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "pki").mkdir(parents=True)
    env = {
        "ETP_DATA_DIR": str(data_dir),
        "ETP_DATABASE_URL": database_url,
        "ETP_SITE": "cli",
        "ETP_LOG_LEVEL": "debug",
    }
    no_master = etp(env, "device", "add", "9")
    assert no_master.returncode == 1 and "no site master secret" in no_master.stderr
    (data_dir / "master.key").write_text(os.urandom(32).hex() + "\n")
    ca_text = "-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"
    (data_dir / "pki" / "ca.crt").write_text(ca_text)
    out = tmp_path / "bundle-9"
    added = etp(
        env,
        "device",
        "add",
        "9",
        "--owner",
        OWNER,
        "--out",
        str(out),
        "--mqtt-url",
        "mqtts://broker.example:8883",
    )
    assert added.returncode == 0, added.stderr
    master = bytes.fromhex((data_dir / "master.key").read_text().strip())
    config = json.loads((out / "etp_config.json").read_text())
    password = config.pop("mqtt_password")
    assert config == {
        "device_id": 9,
        "site": "cli",
        "key": derive_key(master, 9).hex(),
        "mqtt_url": "mqtts://broker.example:8883",
        "notice_key": derive_notice_key(master, 9).hex(),  # the board's own
        "mqtt_user": "bess-9",
        "mqtt_ca_file": "mqtt_ca.crt",
    }
    assert (out / "mqtt_ca.crt").read_text() == ca_text
    assert _mode(out) == 0o700
    assert {p.name: _mode(p) for p in out.iterdir()} == {
        "etp_config.json": 0o600,
        "mqtt_ca.crt": 0o600,
    }
    again = etp(env, "device", "add", "9")
    assert again.returncode == 1 and "already provisioned" in again.stderr
    refused = etp(env, "device", "rotate", "9", "--out", str(out))  # never over a bundle
    assert refused.returncode == 1 and "not empty" in refused.stderr

    rotated = etp(env, "device", "rotate", "9")
    assert rotated.returncode == 0, rotated.stderr
    new_dir = data_dir / "bundles" / "device-9-g1"
    assert str(new_dir) in rotated.stdout and _mode(new_dir) == 0o700
    new_config = json.loads((new_dir / "etp_config.json").read_text())
    assert new_config["key"] == generation_key(master, 9, 1).hex()
    assert new_config["mqtt_password"] != password

    listed = etp(env, "device", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)
    assert (
        item["device_id"],
        item["state"],
        item["owner"],
        item["key_generation"],
        item["online"],
    ) == (9, "active", OWNER, 1, False)
    table = etp(env, "device", "list")
    assert "active" in table.stdout and OWNER in table.stdout
    # the owner given at provisioning is the wallet settlement pays battery 9's sales into
    wallets = etp(env, "wallet", "list", "--json")
    assert wallets.returncode == 0, wallets.stderr
    assert json.loads(wallets.stdout) == [
        {"role": "battery", "id": 9, "pubkey": OWNER, "updated_ms": ANY}
    ]

    revoked = etp(env, "device", "revoke", "9")
    assert revoked.returncode == 0 and "revoked device 9" in revoked.stdout
    unknown = etp(env, "device", "revoke", "10")
    assert unknown.returncode == 1 and "not provisioned" in unknown.stderr
    bad_owner = etp(env, "device", "add", "11", "--owner", "not-a-key")
    assert bad_owner.returncode == 1 and "--owner" in bad_owner.stderr

    async with Store(database_url) as store:
        [row] = await store.list_device_credentials("cli")
        assert await store.list_events(0, limit=100) == []  # the CLI numbers no events
    assert row.state == "revoked" and row.key_generation == 1
    assert verify_password(new_config["mqtt_password"], row.broker_password_hash)
    assert not verify_password(password, row.broker_password_hash)
    # a hub started afterwards records what the CLI did, once, in its own event log (each
    # with the generation the battery holds when the hub sees it: here the latest)
    expected = [
        ("device_provisioned", 9, 1, OWNER),
        ("device_rotated", 9, 1, OWNER),
        ("device_revoked", 9, 1, OWNER),
    ]
    settings = hub_settings(data_dir, database_url=database_url, site="cli",
                            settlement_network="off")
    for _restart in range(2):
        async with running_hub(settings) as hub:
            await wait_for(lambda: hub.events is not None, 5, "events")
            found: list[Any] = []
            for _ in range(50):
                found = await hub.read_events(0, 100, [k for k, *_ in expected])
                if len(found) >= 3:
                    break
                await asyncio.sleep(0.1)
        assert [(e["kind"], e["device_id"], e["payload"]["key_generation"],
                 e["payload"]["owner"]) for e in found] == expected
        assert [e["payload"]["at_ms"] for e in found] == [
            row.created_ms, row.rotated_ms, row.revoked_ms]
    # no secret anywhere but in the bundles: not on stdout/stderr (debug logs included)
    secrets = [
        password,
        new_config["mqtt_password"],
        config["key"],
        new_config["key"],
        master.hex(),
        config["notice_key"],
    ]
    for result in (added, again, refused, rotated, listed, table, revoked, unknown, bad_owner):
        for secret in secrets:
            assert secret not in result.stdout + result.stderr


def test_a_bundle_is_read_the_same_for_a_board_and_a_legacy_bridge(tmp_path: Path) -> None:
    """`etp firmware flash --bundle` and `etp legacy bridge --bundle` read it through one
    function: the config, and the site CA it names (the bridge used to drop that)."""
    from hub.security.devices import BUNDLE_CONFIG_FILE, BundleError, read_bundle

    bundle = tmp_path / "device-7-g0"
    bundle.mkdir()
    (bundle / BUNDLE_CONFIG_FILE).write_text('{"device_id": 7, "mqtt_ca_file": "ca.crt"}')
    with pytest.raises(BundleError, match=r"ca\.crt"):
        read_bundle(bundle)  # names a CA that is not there
    (bundle / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    for path in (bundle, bundle / BUNDLE_CONFIG_FILE):
        config, ca_file = read_bundle(path)
        assert config["device_id"] == 7 and ca_file == bundle / "ca.crt"
    with pytest.raises(BundleError, match="etp device add"):
        read_bundle(tmp_path / "nothing")
