"""`etp doctor`: check a deployment from its ETP_* settings and print what to fix."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from hub.cli.db import DataDir, unwrap_paragraphs


def doctor(
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            help="The gateway's address to probe (default: from ETP_HTTP_HOST / ETP_HTTP_PORT, "
            "https:// when the hub serves TLS); checked even when ETP_HTTP_ENABLED=false.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of lines.")] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=3.0, help="Seconds each check may take.")
    ] = 3.0,
    data_dir: DataDir = None,
) -> None:
    """Check this deployment as the hub would run it (the same ETP_* settings) and say what
    to fix: one line per check, ok / warn / FAIL, with the command that fixes it.

    Checks: the database is reachable and migrated to head; the data dir and the master secret
    exist, key files are 0600 and directories 0700; the broker answers CONNECT with the hub's
    URL and credentials (TLS verified for mqtts://; its certificate's expiry; a warning for
    plain MQTT beyond this machine); site certificates valid for 30 more days; the clock is
    NTP-synchronised (timedatectl); the settlement cluster answers (devnet, mainnet, localnet);
    the HTTP gateway is ready. The broker check never logs in as the hub's own account (that
    would disconnect a running hub on Mosquitto): its password is checked against the site's
    broker password file instead. Exit code 0 when no check FAILs, else 1.
    """
    from hub.ops.doctor import run_doctor
    from hub.runtime import configure_logging
    from hub.settings import Settings

    configure_logging("error")  # each check reports its own failure: no log lines as well

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    try:
        settings = Settings(**overrides)
    except Exception as exc:  # a malformed ETP_* value or an unreadable password file
        typer.echo(f"FAIL  settings           {exc}", err=True)
        raise typer.Exit(1) from None
    report = asyncio.run(run_doctor(settings, http_url=url, timeout_s=timeout))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for check in report.checks:
            typer.echo(check.line())
    raise typer.Exit(1 if report.failed else 0)


doctor.__doc__ = unwrap_paragraphs(doctor.__doc__)
