"""`etp settle status`: the settlement outbox of a hub's database (counts by status, the latest
rows with their signatures, errors); works with the hub running."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.cli.db import DatabaseUrl, DataDir, resolve_url

__all__ = ["app", "bench_settle"]

app = typer.Typer(
    help="Settlement of verified trades on the ledger (hub/settlement/README.md).",
    no_args_is_help=True,
)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


async def _read(url: str, latest: int) -> dict[str, Any]:
    from hub.store import Store

    async with Store(url) as store:
        rows = await store.list_settlements()
    counts = Counter(row.status for row in rows)
    recent = sorted(rows, key=lambda row: (row.updated_ms, row.trade_id), reverse=True)[:latest]
    failed = [row for row in rows if row.status == "failed"]
    view = lambda row: {  # noqa: E731
        "trade_id": row.trade_id,
        "status": row.status,
        "attempts": row.attempts,
        "signature": row.signature,
        "error": row.error,
        "updated_ms": row.updated_ms,
    }
    return {
        "counts": {s: counts.get(s, 0) for s in ("pending", "submitted", "settled", "failed")},
        "total": len(rows),
        "latest": [view(row) for row in recent],
        "failed": [view(row) for row in failed[-latest:]],
    }


@app.command()
def status(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    latest: Annotated[int, typer.Option("--latest", min=0, help="rows to list")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by status, the latest rows with their signatures, and failures with errors."""
    from sqlalchemy.engine import make_url

    from hub.store import StoreError

    url = resolve_url(database_url, data_dir)
    parsed = make_url(url)
    on_disk = parsed.get_backend_name() == "sqlite" and parsed.database not in (
        None, "", ":memory:"
    )
    if on_disk and not Path(str(parsed.database)).exists():
        typer.echo(f"error: no hub database at {parsed.database} (wrong --data-dir?)", err=True)
        raise typer.Exit(1)
    try:
        result = asyncio.run(_read(url, latest))
    except StoreError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    counts = result["counts"]
    typer.echo(
        f"settlements: {result['total']}  pending {counts['pending']}  submitted "
        f"{counts['submitted']}  settled {counts['settled']}  failed {counts['failed']}"
    )
    if result["latest"]:
        typer.echo("\nlatest:")
        typer.echo(f"  {'trade':>7}  {'status':<9} {'tries':>5}  {'updated':<20}  signature")
        for row in result["latest"]:
            typer.echo(
                f"  {row['trade_id']:>7}  {row['status']:<9} {row['attempts']:>5}  "
                f"{_time(row['updated_ms']):<20}  {row['signature'] or '-'}"
            )
    if result["failed"]:
        typer.echo("\nfailed:")
        for row in result["failed"]:
            typer.echo(f"  trade {row['trade_id']}: {row['error'] or 'no reason recorded'}")


def bench_settle(
    trades: Annotated[int, typer.Option(min=1, help="verified trades to settle")] = 1000,
    sellers: Annotated[int, typer.Option(min=1, help="battery owners (one battery each)")] = 100,
    buyers: Annotated[int, typer.Option(min=1, help="aggregators")] = 3,
    program: Annotated[
        Path | None,
        typer.Option(help="built program (default anchor/target/etp_settlement.so)",
                     show_default=False),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Verified trades settled on the embedded ledger: time, settlements per transaction,
    compute units and fees per trade (the ledger checked afterwards)."""
    from hub.runtime import configure_logging
    from hub.settlement.program import ProgramMissingError
    from hub.tools.bench.settle import format_table, run_settle_bench

    configure_logging("warning")
    try:
        result = asyncio.run(run_settle_bench(trades, sellers, buyers, program))
    except ProgramMissingError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(result.as_dict(), indent=2))
        return
    typer.echo(format_table(result))
