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


def bench_flood(
    batteries: int = typer.Option(20, min=1, help="well-behaved simulated batteries"),
    window: float = typer.Option(
        15.0, min=2.0, help="seconds measured without, then with, the flood"
    ),
    multiple: float = typer.Option(
        10.0, min=0.1, help="flood rate as a multiple of the whole fleet's baseline frame rate"
    ),
    rate: float | None = typer.Option(
        None, min=1.0, help="flood rate in frames/s (instead of --multiple)", show_default=False
    ),
    auction_interval_ms: int = typer.Option(1000, min=10, help="each battery's auction cadence"),
    status_ms: int = typer.Option(1000, min=100, help="battery status period, ms"),
    broker: str = typer.Option(
        "embedded", help="embedded (the hub's amqtt child process) | mosquitto (/usr/sbin)"
    ),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """One client floods the hub with bad and good-looking frames at 10x the fleet's rate:
    print the other batteries' Query->QueryResponse latency (p50/p99, measured at the hub)
    and trades without and with the flood, the frames rejected, the quarantine, and whether
    any trade was lost. Target: p99 under 50 ms with the flood, on an idle machine."""
    from hub.cli.service import run_loop
    from hub.runtime import configure_logging
    from hub.tools.bench.flood import FloodConfig, format_table, run_flood

    configure_logging("error")  # logs go to stderr; stdout carries only the result
    if broker not in ("embedded", "mosquitto"):
        typer.echo("error: --broker must be embedded or mosquitto", err=True)
        raise typer.Exit(2)
    config = FloodConfig(
        batteries=batteries,
        window_s=window,
        multiple=multiple,
        flood_rate=rate,
        auction_interval_ms=auction_interval_ms,
        status_ms=status_ms,
        broker="embedded" if broker == "embedded" else "mosquitto",
    )
    try:
        result = run_loop(run_flood(config))
    except Exception as exc:
        typer.echo(f"error: benchmark failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2) if json_out else format_table(result))
