"""`etp device add|rotate|revoke|list`: provision batteries (key generation, broker password,
owner) in the hub's database and write the config bundle a board is flashed with
(`etp firmware flash --bundle DIR`). Works with the hub running: it re-reads the credentials
every ETP_CREDENTIALS_REFRESH_S (1 s), so a revoked battery is refused within seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from hub.cli.db import DatabaseUrl, DataDir

if TYPE_CHECKING:
    from hub.settings import Settings
    from hub.store import DeviceCredentialRow, Store

__all__ = ["app"]

_T = TypeVar("_T")

app = typer.Typer(
    help="Provision batteries: each gets its own HMAC key generation and broker login "
    "(bess-<id>), written to a config bundle directory for `etp firmware flash --bundle DIR`. "
    "`rotate` issues a new key and password (the old key is accepted ETP_ROTATION_GRACE_S "
    "more), `revoke` makes the running hub refuse the battery within seconds. With "
    "ETP_REQUIRE_PROVISIONING=true the hub refuses batteries never added here.",
    no_args_is_help=True,
)

DeviceId = Annotated[
    int, typer.Argument(metavar="N", help="Device id 1..65535 (its key id).", min=1, max=65535)
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        help="Bundle directory to create (must not exist or be empty; default "
        "<data dir>/bundles/device-N-gG). It holds the device key and broker password: "
        "flash it, then delete it.",
        show_default=False,
    ),
]
MqttUrl = Annotated[
    str | None,
    typer.Option(
        "--mqtt-url",
        help="Broker URL the board connects to (default: the hub's, ETP_MQTT_URL).",
        show_default=False,
    ),
]


def _fail(message: str) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(1)


def _settings(database_url: str | None, data_dir: Path | None) -> Settings:
    from hub.settings import Settings

    overrides: dict[str, Any] = {}
    if database_url is not None:
        overrides["database_url"] = database_url
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    return Settings(**overrides)


def _with_store(settings: Settings, work: Callable[[Store], Awaitable[_T]]) -> _T:
    """Open the store (migrating it if needed), run `work(store)`, close it (writing the
    events it queued)."""
    from hub.store import DeviceCredentialError, Store, StoreError

    async def run() -> _T:
        # a small block of event numbers: a short-lived process writes one event or none
        async with Store(settings.resolved_database_url(), event_seq_block=16) as store:
            return await work(store)

    try:
        return asyncio.run(run())
    except DeviceCredentialError as err:
        _fail(str(err))
    except StoreError as err:
        _fail(str(err))
    raise AssertionError("not reached")  # _fail exits


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _age(ms: int, now: int) -> str:
    seconds = max(0, (now - ms) // 1000)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _master(settings: Settings) -> bytes:
    from hub.settings import MasterSecretError, load_master_secret

    path = settings.master_secret_path()
    if not path.is_file():  # never a new one here: its keys would be unknown to the hub
        _fail(
            f"no site master secret at {path}: start the hub once (`etp hub`) to create it, "
            "or point --data-dir / ETP_DATA_DIR at the hub's data directory"
        )
    try:
        return load_master_secret(settings.master_secret_path())
    except MasterSecretError as err:
        _fail(str(err))
        raise  # not reached


def _bundle_dir(settings: Settings, out: Path | None, device_id: int, generation: int) -> Path:
    from hub.security.devices import prepare_bundle_dir

    directory = out or settings.data_dir / "bundles" / f"device-{device_id}-g{generation}"
    try:
        return prepare_bundle_dir(directory)
    except OSError as err:
        _fail(str(err))
        raise  # not reached


def _issue(
    settings: Settings,
    device_id: int,
    out: Path | None,
    mqtt_url: str | None,
    change: Callable[[Store, str], Awaitable[DeviceCredentialRow]],
) -> tuple[DeviceCredentialRow, Path, str | None]:
    """Make a broker password, apply `change(store, password_hash)`, write the bundle of the
    resulting key generation, update the broker's accounts (the running hub, reading the
    credentials, records the event)."""
    from hub.security.accounts import hash_password, new_password
    from hub.security.devices import (
        apply_broker_access,
        bundle_config,
        site_ca_file,
        write_bundle,
    )

    master = _master(settings)
    password = new_password()
    ca_file = site_ca_file(settings)
    # a given --out is checked before anything changes; the default one names the generation
    chosen = _bundle_dir(settings, out, device_id, 0) if out is not None else None

    async def work(store: Store) -> tuple[DeviceCredentialRow, Path, str | None]:
        row = await change(store, hash_password(password))
        directory = chosen or _bundle_dir(settings, None, device_id, row.key_generation)
        config = bundle_config(
            settings,
            master,
            device_id,
            row.key_generation,
            password,
            mqtt_url=mqtt_url,
            with_ca=ca_file is not None,
        )
        write_bundle(directory, config, ca_file)
        problem = await apply_broker_access(store, settings)
        return row, directory, problem

    return _with_store(settings, work)


def _report(verb: str, row: DeviceCredentialRow, directory: Path, problem: str | None) -> None:
    typer.echo(
        f"{verb} device {row.device_id} on site {row.site}: key generation "
        f"{row.key_generation}, broker user bess-{row.device_id}"
    )
    typer.echo(f"bundle: {directory}")
    typer.echo(
        "It holds the device key and broker password (shown nowhere else): flash it with "
        f"`etp firmware flash --port PORT --bundle {directory}`, then delete it."
    )
    if problem:
        typer.echo("warning: " + problem, err=True)


@app.command()
def add(
    device_id: DeviceId,
    owner: Annotated[
        str | None,
        typer.Option(
            "--owner",
            help="The battery owner's Solana public key (base58): its sales are paid there "
            "(the same as `etp wallet add battery N PUBKEY`).",
            show_default=False
        ),
    ] = None,
    out: Out = None,
    mqtt_url: MqttUrl = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Provision battery N and write its config bundle.

    Key generation 0 (a revoked battery comes back at a new generation) and a new broker
    password, shown only in the bundle."""
    from hub.security.devices import OwnerError, parse_owner

    if owner is not None:
        try:
            owner = parse_owner(owner)
        except OwnerError as err:
            _fail(f"--owner: {err}")
    settings = _settings(database_url, data_dir)

    async def change(store: Store, password_hash: str) -> DeviceCredentialRow:
        if owner is not None:  # the wallet settlement pays this battery's sales into
            await store.set_wallet(settings.site, "battery", device_id, owner)
        return await store.provision_device(
            settings.site, device_id, password_hash=password_hash, owner=owner
        )

    row, directory, problem = _issue(settings, device_id, out, mqtt_url, change)
    _report("provisioned", row, directory, problem)


@app.command()
def rotate(
    device_id: DeviceId,
    out: Out = None,
    mqtt_url: MqttUrl = None,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """New key generation and broker password for battery N, in a new bundle.

    The hub keeps accepting the previous key for ETP_ROTATION_GRACE_S (300 s) and signs with
    the key the battery is seen using."""
    settings = _settings(database_url, data_dir)

    async def change(store: Store, password_hash: str) -> DeviceCredentialRow:
        return await store.rotate_device_credentials(
            settings.site, device_id, password_hash=password_hash
        )

    row, directory, problem = _issue(settings, device_id, out, mqtt_url, change)
    _report("rotated", row, directory, problem)


@app.command()
def revoke(
    device_id: DeviceId,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Revoke battery N: the running hub refuses it within seconds.

    The hub re-reads the credentials every ETP_CREDENTIALS_REFRESH_S (1 s), then refuses the
    battery's frames and ends its auctions; its broker login is removed. `etp device add N`
    provisions it again with a new key."""
    from hub.security.devices import apply_broker_access

    settings = _settings(database_url, data_dir)

    async def work(store: Store) -> tuple[DeviceCredentialRow, bool, str | None]:
        row, changed = await store.revoke_device_credentials(settings.site, device_id)
        problem = None
        if changed:
            problem = await apply_broker_access(store, settings)
        return row, changed, problem

    row, changed, problem = _with_store(settings, work)
    when = _time(row.revoked_ms)
    if changed:
        typer.echo(f"revoked device {device_id} on site {row.site} at {when}")
    else:
        typer.echo(f"device {device_id} was already revoked at {when}")
    if problem:
        typer.echo("warning: " + problem, err=True)


@app.command("list")
def list_devices(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    database_url: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Provisioned batteries: state, owner, key generation and age, last seen, online.

    Last seen and online come from the hub's device table; no secret is shown."""
    from hub.store.validate import now_ms

    settings = _settings(database_url, data_dir)

    async def work(store: Store) -> list[dict[str, Any]]:
        rows = await store.list_device_credentials(settings.site)
        seen = {d.device_id: d for d in await store.list_devices() if d.site == settings.site}
        wallets = {w.party_id: w.pubkey for w in await store.list_wallets(settings.site)
                   if w.role == "battery"}
        out = []
        for row in rows:
            device = seen.get(row.device_id)
            out.append(
                {
                    "device_id": row.device_id,
                    "site": row.site,
                    "state": row.state,
                    "owner": wallets.get(row.device_id, row.owner),
                    "key_generation": row.key_generation,
                    "created_ms": row.created_ms,
                    "rotated_ms": row.rotated_ms,
                    "revoked_ms": row.revoked_ms,
                    "key_since_ms": row.rotated_ms or row.created_ms,
                    "last_seen_ms": device.last_seen_ms if device else None,
                    "online": bool(device.online) if device else False,
                }
            )
        return out

    devices = _with_store(settings, work)
    if as_json:
        typer.echo(json.dumps(devices, indent=2))
        return
    if not devices:
        typer.echo("no provisioned devices (provision one with `etp device add N`)")
        return
    now = now_ms()
    typer.echo(
        f"{'id':>5}  {'state':<8} {'gen':>3} {'key age':>7}  {'last seen':<20} {'online':<6} owner"
    )
    for item in devices:
        typer.echo(
            f"{item['device_id']:>5}  {item['state']:<8} {item['key_generation']:>3} "
            f"{_age(item['key_since_ms'], now):>7}  {_time(item['last_seen_ms']):<20} "
            f"{'yes' if item['online'] else 'no':<6} {item['owner'] or '-'}"
        )
