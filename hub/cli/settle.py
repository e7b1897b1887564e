"""`etp settle status`: the settlement outbox of a hub's database (counts by status, the latest
rows with their signatures, errors); works with the hub running. `etp settle dispute` and
`etp settle resolve`: disputes of settled trades, through the running hub's HTTP API (the
embedded ledger lives inside the hub process) with an operator API key."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from hub.cli.db import DatabaseUrl, DataDir, resolve_url
from hub.store.models import SETTLEMENT_STATUSES

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
        "counts": {s: counts.get(s, 0) for s in SETTLEMENT_STATUSES},
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
    typer.echo(
        f"disputes: open {counts['disputed']}  resolved {counts['refunded'] + counts['upheld']} "
        f"(refunded {counts['refunded']}, upheld {counts['upheld']})"
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


# ---- disputes: through the running hub's gateway ------------------------------------------

ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--url", envvar="ETP_API_URL", show_default=False,
        help="the running hub's HTTP address (default http://ETP_HTTP_HOST:ETP_HTTP_PORT, "
        "i.e. http://127.0.0.1:8000)",
    ),
]
ApiKey = Annotated[
    str | None,
    typer.Option(
        "--api-key", envvar="ETP_API_KEY", show_default=False,
        help="an operator API key (`etp apikey create --role operator`; `etp demo` prints one "
        "on its first start)",
    ),
]


def _post(url: str | None, key: str | None, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the hub's gateway; a clear message and exit 1 on any failure."""
    import httpx

    if not key:
        typer.echo("error: an operator API key is needed: pass --api-key or set ETP_API_KEY "
                   "(make one with `etp apikey create --name ops --role operator`)", err=True)
        raise typer.Exit(1)
    if url is None:
        from hub.settings import Settings

        settings = Settings()
        url = f"http://{settings.http_host}:{settings.http_port}"
    target = url.rstrip("/") + path
    try:
        response = httpx.post(target, json=body, headers={"Authorization": f"Bearer {key}"},
                              timeout=60.0)
    except httpx.HTTPError as exc:
        typer.echo(f"error: no hub answers at {url} ({type(exc).__name__}); is `etp hub` or "
                   "`etp demo` running? (--url / ETP_API_URL)", err=True)
        raise typer.Exit(1) from None
    try:
        answer = response.json()
    except ValueError:
        answer = {"detail": response.text[:200]}
    detail = answer.get("detail") if isinstance(answer, dict) else None
    if response.status_code == 401:
        typer.echo(f"error: the hub refused the API key: {detail}", err=True)
        raise typer.Exit(1)
    if response.status_code == 403:
        typer.echo(f"error: disputes need an operator key: {detail}", err=True)
        raise typer.Exit(1)
    if response.status_code != 200:
        typer.echo(f"error ({response.status_code}): {detail or answer}", err=True)
        raise typer.Exit(1)
    return answer if isinstance(answer, dict) else {}


@app.command()
def dispute(
    trade_id: Annotated[int, typer.Argument(help="the settled trade (its id, as in "
                                                  "`etp settle status`)")],
    by: Annotated[
        str, typer.Option("--by", help="who disputes: buyer (the aggregator) or seller (the "
                          "battery owner); the hub signs with that party's key")
    ] = "buyer",
    reason: Annotated[str | None, typer.Option("--reason", help="why (kept in the event log)")
                      ] = None,
    url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dispute a settled trade on the ledger (within the market's dispute window, once).

    Example: etp settle dispute 42 --by buyer --reason "energy not delivered" --api-key KEY
    """
    if by not in ("buyer", "seller"):
        typer.echo("error: --by takes buyer or seller", err=True)
        raise typer.Exit(2)
    answer = _post(url, api_key, f"/api/v1/settlements/{trade_id}/dispute",
                   {"by": by, "reason": reason})
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    deadline = answer.get("dispute_deadline")
    until = f" (dispute window open until {_time(int(deadline) * 1000)})" if deadline else ""
    typer.echo(f"trade {trade_id} disputed by the {by}{until}; signature {answer['signature']}")
    typer.echo(f"resolve it with: etp settle resolve {trade_id} "
               "(--refund AMOUNT_MC | --full-refund | --unfounded)")


@app.command()
def resolve(
    trade_id: Annotated[int, typer.Argument(help="the disputed trade")],
    refund: Annotated[
        int | None, typer.Option("--refund", min=1, show_default=False,
                                 help="refund the buyer this many milli-cents (the seller was "
                                 "at fault and loses reputation)")
    ] = None,
    full_refund: Annotated[bool, typer.Option("--full-refund",
                                              help="refund the trade's whole amount")] = False,
    unfounded: Annotated[bool, typer.Option("--unfounded", help="no refund: the dispute was "
                                            "unfounded, the disputer loses reputation")] = False,
    url: ApiUrl = None,
    api_key: ApiKey = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Resolve a trade's open dispute as the market authority (exactly one of --refund,
    --full-refund, --unfounded). Refunds come from the authority's tokens into the buyer's
    escrow; the program never takes them back from the seller.

    Example: etp settle resolve 42 --refund 1500 --api-key KEY
    """
    chosen = [refund is not None, full_refund, unfounded]
    if sum(chosen) != 1:
        typer.echo("error: give exactly one of --refund AMOUNT_MC, --full-refund, --unfounded",
                   err=True)
        raise typer.Exit(2)
    body: dict[str, Any] = (
        {"full_refund": True} if full_refund else {"refund_mc": 0 if unfounded else refund}
    )
    answer = _post(url, api_key, f"/api/v1/settlements/{trade_id}/resolve", body)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    if answer["status"] == "refunded":
        typer.echo(f"trade {trade_id}: refunded {answer['refund_mc']} mc of "
                   f"{answer['amount_mc']} mc to the buyer; the seller loses reputation")
    else:
        typer.echo(f"trade {trade_id}: dispute unfounded, no refund; the "
                   f"{answer.get('penalised') or 'disputer'} loses reputation")
    typer.echo(f"signature {answer['signature']}")
