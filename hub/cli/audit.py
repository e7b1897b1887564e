"""`etp audit security`: the site's security events (rejected frames, failed logins, API keys,
device credentials, quarantines, operator actions, alerts) from the hub's database, so it works
with the hub running or stopped."""

from __future__ import annotations

import asyncio
import json
import re
import time
from datetime import UTC, datetime
from typing import Annotated

import typer

from hub.cli.db import DatabaseUrl, DataDir, resolve_url

__all__ = ["app", "parse_since"]

app = typer.Typer(
    help="The site's audit trail, read from the hub's database (SQLite in the data dir, or "
    "ETP_DATABASE_URL): works whether the hub runs or not.",
    no_args_is_help=True,
)

_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")


def parse_since(text: str, *, now_s: float | None = None) -> int:
    """`--since` as epoch ms: a duration back from now (90s, 15m, 2h, 7d, 1w) or an ISO 8601
    time (2026-12-05, 2026-12-05T13:00, ...Z or with an offset; UTC when none is given)."""
    text = text.strip()
    match = _DURATION.match(text.lower())
    if match:
        seconds = int(match.group(1)) * _UNITS_S[match.group(2)]
        return int(((time.time() if now_s is None else now_s) - seconds) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is neither a duration (90s, 15m, 2h, 7d, 1w) nor an ISO 8601 time "
            "(2026-12-05T13:00:00Z)",
            param_hint="--since",
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.") + (
        f"{ms % 1000:03d}Z"
    )


@app.command()
def security(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only events from then on: a duration back from now (90s, 15m, 2h, 7d) or "
            "an ISO 8601 time (2026-12-05T13:00:00Z; UTC unless an offset is given).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[
        int | None,
        typer.Option("--device", min=0, help="Only events of this device id.", show_default=False),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="At most this many (the newest).")
    ] = 100,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON lines, one per event.")
    ] = False,
    database_url_option: DatabaseUrl = None,
    data_dir: DataDir = None,
) -> None:
    """Security events, oldest first: frames the hub rejected (per device and reason, summed
    per 10 s), failed logins at the gateway (per client address, summed per 10 s), API keys
    created and revoked, devices provisioned, revoked, rotated or quarantined, operator
    actions and alerts. No line holds a secret (keys are named etp_<id>)."""
    from hub.security.audit import AuditRow, list_security_events
    from hub.store import Store, StoreError

    since_ms = parse_since(since) if since is not None else None
    url = resolve_url(database_url_option, data_dir)

    async def read() -> list[AuditRow]:
        async with Store(url, event_seq_block=2) as store:
            return await list_security_events(
                store, since_ms=since_ms, device_id=device, limit=limit
            )

    try:
        rows = asyncio.run(read())
    except StoreError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row.as_dict() | {"time": _time(row.ts_ms)}))
        return
    if not rows:
        scope = f" since {_time(since_ms)}" if since_ms is not None else ""
        typer.echo(f"no security events{scope}" + (f" for device {device}" if device else ""))
        return
    typer.echo(f"{'time (UTC)':<24} {'kind':<19} {'device / client':<22} detail")
    for row in rows:
        typer.echo(f"{_time(row.ts_ms):<24} {row.kind:<19} {row.subject[:22]:<22} {row.detail}")
