"""`etp pki init|show`: the site's certificate authority and the broker, gateway and hub
certificates (hub/security/pki.py; docs/security-tls.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated

import typer

from hub.cli.db import DataDir

__all__ = ["app"]

app = typer.Typer(
    help="TLS certificates of the site. `etp pki init` makes a site CA and the certificates of "
    "the MQTT broker, the HTTPS gateway and the hub (in DATA_DIR/pki, keys 0600); a hub bound "
    "to a non-loopback address then serves mqtts:// on 8883 and https:// with them. Boards "
    "trust the site through its ca.crt: `etp firmware flash --ca-file DATA_DIR/pki/ca.crt`.",
    no_args_is_help=True,
)


def _data_dir(data_dir: Path | None) -> Path:
    from hub.settings import Settings

    return data_dir if data_dir is not None else Settings().data_dir


def _fail(message: str) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(1)


@app.command()
def init(
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A DNS name or IP address the broker and gateway are reached at (repeat for "
            "several). localhost and 127.0.0.1 are always added. Default: this machine's host "
            "name, localhost, 127.0.0.1, ::1 and its non-loopback addresses.",
            show_default=False,
        ),
    ] = None,
    days: Annotated[
        int, typer.Option(min=1, help="Validity of the broker, gateway and hub certificates.")
    ] = 397,
    force: Annotated[
        bool,
        typer.Option(help="Renew existing certificates (the CA is kept: boards need nothing new)."),
    ] = False,
    new_ca: Annotated[
        bool,
        typer.Option(
            help="With --force: replace the CA too (every board then needs the new ca.crt)."
        ),
    ] = False,
    site: Annotated[str | None, typer.Option(help="Site id in the CA's name [ETP_SITE].")] = None,
    data_dir: DataDir = None,
) -> None:
    """Make the site CA and the broker, gateway and hub certificates (ECDSA P-256)."""
    from hub.security.pki import PkiError, site_pki
    from hub.settings import Settings

    if new_ca and not force:
        _fail("--new-ca replaces the CA of existing certificates: give --force with it")
    pki = site_pki(_data_dir(data_dir))
    try:
        written = pki.init(
            host or (), days=days, force=force, new_ca=new_ca, site=site or Settings().site
        )
    except PkiError as exc:
        _fail(str(exc))
        return
    for path in written:
        typer.echo(f"wrote {path}" + ("  (private key, 0600)" if path.suffix == ".key" else ""))
    info = {item.role: item for item in pki.show()}
    typer.echo(f"names of the broker and gateway certificates: {', '.join(info['broker'].names)}")
    typer.echo(f"CA fingerprint (SHA-256): {info['ca'].sha256}")
    typer.echo(
        "next: flash boards with `etp firmware flash --ca-file "
        f"{pki.ca_cert}`; `etp hub --mqtt-host 0.0.0.0 --http-host 0.0.0.0` now serves "
        "mqtts:// on 8883 and https://"
    )


@app.command()
def show(data_dir: DataDir = None) -> None:
    """Subjects, names, validity and SHA-256 fingerprints of the site's certificates; warns
    about any that expire within 30 days (exit code 1 when one has expired)."""
    from hub.security.pki import EXPIRY_WARNING_DAYS, PkiError, site_pki

    pki = site_pki(_data_dir(data_dir))
    try:
        certificates = pki.show()
    except PkiError as exc:
        _fail(str(exc))
        return
    if not certificates:
        _fail(f"no certificates in {pki.directory}: make them with `etp pki init`")
    now = dt.datetime.now(dt.UTC)
    expired = False
    for cert in certificates:
        left = cert.days_left(now)
        typer.echo(f"{cert.role}: {cert.path}")
        typer.echo(f"  subject   {cert.subject}")
        typer.echo(f"  issuer    {cert.issuer}")
        if cert.names:
            typer.echo(f"  names     {', '.join(cert.names)}")
        typer.echo(
            f"  valid     {cert.not_before:%Y-%m-%d} .. {cert.not_after:%Y-%m-%d} "
            f"({int(left)} days left)"
        )
        typer.echo(f"  sha256    {cert.sha256}")
        if left < 0:
            expired = True
            typer.echo(f"warning: {cert.role} certificate has EXPIRED", err=True)
        elif left < EXPIRY_WARNING_DAYS:
            typer.echo(
                f"warning: {cert.role} certificate expires in {int(left)} days: renew with "
                "`etp pki init --force`",
                err=True,
            )
    if not pki.exists():
        typer.echo(
            f"warning: the PKI in {pki.directory} is incomplete: `etp pki init --force`", err=True
        )
    if expired:
        raise typer.Exit(1)
