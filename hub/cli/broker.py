"""`etp broker config|check`: the site's broker access (who may log in, which topics) as
Mosquitto files for an operator, and a readable summary of it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from hub.cli.db import DatabaseUrl, DataDir

__all__ = ["app"]

app = typer.Typer(
    help="The site's MQTT broker lockdown: no anonymous clients; battery bess-N may publish "
    "only its own birth/death/status/resp and read only its own req and market/#; only user "
    "`hub` sends requests and market notices and reads everything. The accounts are the "
    "devices added with `etp device add` plus the hub.",
    no_args_is_help=True,
)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _settings(data_dir: Path | None, database_url: str | None) -> Any:
    from hub.settings import Settings

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    try:
        return Settings(**overrides)
    except Exception as exc:  # pydantic validation: the message, not a traceback
        _fail(f"invalid configuration: {exc}")


FromFiles = Annotated[
    bool,
    typer.Option(
        "--from-files",
        help="Take the accounts from the password file the broker uses now "
        "(ETP_BROKER_CONFIG_DIR or DATA_DIR/broker) instead of the database.",
    ),
]


def _accounts(settings: Any, from_files: bool) -> tuple[list[Any], str]:
    """The site's broker accounts and where they came from: the database (active devices
    and the hub), or the password file the hub last wrote (`from_files`)."""
    from hub.security.broker import (
        PASSWORD_FILE,
        AccessFileError,
        accounts_from_password_file,
        broker_config_dir,
    )

    if not from_files:
        from hub.security.devices import broker_accounts
        from hub.store import Store, StoreError

        async def load() -> list[Any]:
            # the site (and the hub's password file) come from these settings, not the env
            async with Store(settings.resolved_database_url()) as store:
                return list(await broker_accounts(store, settings=settings))

        try:
            return asyncio.run(load()), "the database"
        except StoreError as exc:
            _fail(str(exc))
    path = broker_config_dir(settings) / PASSWORD_FILE
    if not path.exists():
        _fail(f"no broker accounts: {path} does not exist (add a device with `etp device add`)")
    try:
        return accounts_from_password_file(path), str(path)
    except AccessFileError as exc:
        _fail(str(exc))


_CONFIG_HELP = (
    "Write mosquitto.conf, a password file and an ACL file for an external Mosquitto.\n\n"
    "Then run `mosquitto -c DIR/mosquitto.conf` (or copy its lines into "
    "/etc/mosquitto/conf.d/etp.conf) and start the hub with ETP_MQTT_URL=mqtt://HOST:PORT "
    "(mqtts:// with --tls), "
    "ETP_BROKER_CONFIG_DIR=DIR and ETP_MOSQUITTO_PID_FILE=PIDFILE: after `etp device "
    "add/revoke/rotate` the hub rewrites the files and sends Mosquitto SIGHUP, which also "
    "disconnects clients whose account was removed or got a new password.\n\n"
    "The files are mode 0640 and a Mosquitto started as root reads them as user mosquitto: "
    "`chgrp -R mosquitto DIR && chmod 2750 DIR` (setgid, so the files the hub rewrites keep "
    "the group). Mosquitto writes its pid file as user mosquitto too (e.g. "
    "/run/mosquitto/mosquitto.pid). Passwords are stored only as Mosquitto $7$ hashes."
)
_CHECK_HELP = (
    "Print who may log in to the broker and what each account may publish and read (no "
    "passwords or hashes), and whether the embedded broker will be locked."
)


@app.command(help=_CONFIG_HELP)
def config(
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Directory for mosquitto.conf, passwords and acl (default: "
            "ETP_BROKER_CONFIG_DIR, else DATA_DIR/broker, where the hub rewrites them).",
            show_default=False,
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address Mosquitto listens on.")] = "127.0.0.1",
    port: Annotated[
        int | None,
        typer.Option(
            help="Port Mosquitto listens on (default 8883 with --tls, else 1883).",
            show_default=False,
        ),
    ] = None,
    tls: Annotated[
        bool,
        typer.Option(
            help="TLS listener with DATA_DIR/pki/{ca.crt,broker.crt,broker.key} "
            "(made by `etp pki init`)."
        ),
    ] = False,
    pid_file: Annotated[
        Path | None,
        typer.Option(
            help="Mosquitto writes its pid here; give the hub the same path as "
            "ETP_MOSQUITTO_PID_FILE so it can reload Mosquitto (default: "
            "ETP_MOSQUITTO_PID_FILE).",
            show_default=False,
        ),
    ] = None,
    from_files: FromFiles = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write the Mosquitto files (see _CONFIG_HELP)."""
    from hub.security.broker import BrokerConfigError, broker_config_dir, write_mosquitto_config

    settings = _settings(data_dir, database_url)
    accounts, source = _accounts(settings, from_files)
    tls_files = None
    if tls:
        from hub.security.broker import BrokerTlsFiles

        tls_files = BrokerTlsFiles.in_data_dir(settings.data_dir)
        if missing := tls_files.missing():
            _fail(f"--tls needs {', '.join(map(str, missing))}: run `etp pki init` first")
    directory = out or broker_config_dir(settings)
    try:
        files = write_mosquitto_config(
            directory,
            accounts,
            site=settings.site,
            listener_host=host,
            port=port or (8883 if tls else 1883),
            tls=tls_files,
            max_message_bytes=settings.broker_max_message_bytes,
            pid_file=pid_file or settings.mosquitto_pid_file,
        )
    except (BrokerConfigError, OSError) as exc:
        _fail(str(exc))
    typer.echo(f"{len(accounts)} broker accounts (from {source}) written to {directory}:")
    for path in (files.conf, files.password_file, files.acl_file):
        typer.echo(f"  {path}")
    typer.echo(f"run: mosquitto -c {files.conf}")


@app.command(help=_CHECK_HELP)
def check(
    from_files: FromFiles = False, data_dir: DataDir = None, database_url: DatabaseUrl = None
) -> None:
    """Print the site's broker access (see _CHECK_HELP)."""
    from hub.security.broker import (
        BrokerConfigError,
        broker_config_dir,
        embedded_locked,
        grants_for,
    )

    settings = _settings(data_dir, database_url)
    accounts, source = _accounts(settings, from_files)
    try:
        grants = grants_for(accounts, settings.site)
    except BrokerConfigError as exc:
        _fail(str(exc))
    typer.echo(
        f"site {settings.site}: {len(grants)} broker accounts (from {source}); "
        "anonymous clients: refused"
    )
    for grant in grants:
        typer.echo(f"{grant.username}")
        typer.echo(f"  publish: {', '.join(grant.write)}")
        typer.echo(f"  read:    {', '.join(grant.read)}")
    directory = broker_config_dir(settings)
    locked, files_present = embedded_locked(settings)
    if settings.mqtt_url is not None:
        typer.echo(
            f"broker: external {settings.mqtt_url}; files in {directory}"
            + (
                f", reloaded via {settings.mosquitto_pid_file}"
                if settings.mosquitto_pid_file
                else " (no ETP_MOSQUITTO_PID_FILE: send Mosquitto SIGHUP yourself after changes)"
            )
        )
    else:
        typer.echo(
            f"embedded broker: {'LOCKED' if locked else 'OPEN'} "
            f"(ETP_BROKER_LOCKED={settings.broker_locked}; files in {directory} "
            f"{'present' if files_present else 'absent'})"
        )
