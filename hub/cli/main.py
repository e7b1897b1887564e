"""Root of the `etp` command: registers every subcommand group."""

import typer

from hub.cli import (
    apikey,
    broker,
    db,
    firmware,
    market,
    pki,
    proto,
    report,
    service,
    settle,
    wallet,
)
from hub.cli import audit as audit_cli
from hub.cli import device as device_cli
from hub.cli import doctor as doctor_cli
from hub.cli import legacy as legacy_cli

app = typer.Typer(
    name="etp",
    help="ETP: battery storage systems sell energy in auctions; aggregators compete to buy it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

bench_app = typer.Typer(
    help="Benchmarks: commands that print measured numbers (table or --json).", no_args_is_help=True
)

app.add_typer(proto.app, name="proto")
app.add_typer(db.app, name="db")
app.add_typer(apikey.app, name="apikey")
app.add_typer(bench_app, name="bench")
app.add_typer(firmware.app, name="firmware")
app.add_typer(settle.app, name="settle")
settle.app.add_typer(market.app, name="market")
app.add_typer(wallet.app, name="wallet")
app.add_typer(device_cli.app, name="device")
app.add_typer(pki.app, name="pki")
app.add_typer(broker.app, name="broker")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(legacy_cli.app, name="legacy")
app.command("hub")(service.hub)
app.command("demo")(service.demo)
app.command("report")(report.report)
app.command("doctor")(doctor_cli.doctor)
bench_app.command("hub")(service.bench_hub)
bench_app.command("proto")(proto.bench_proto)
bench_app.command("firmware")(firmware.bench_firmware)
bench_app.command("store")(db.bench_store)
bench_app.command("settle")(settle.bench_settle)
bench_app.command("flood")(audit_cli.bench_flood)


@bench_app.command("gateway")
def bench_gateway(
    clients: int = typer.Option(200, min=1, help="WebSocket clients, each gets every event"),
    duration: float = typer.Option(20.0, min=1.0, help="measured seconds"),
    trades: int = typer.Option(
        100_000, min=0, help="trades (and auctions) seeded for the dashboard queries; 0 skips them"
    ),
    batteries: int = typer.Option(10, min=1, help="simulated batteries trading (the event source)"),
    processes: int = typer.Option(
        0, min=0, help="client processes (0: one per 500 clients, at most one per core)"
    ),
    deflate: bool = typer.Option(True, help="clients offer permessage-deflate, as browsers do"),
    query_rounds: int = typer.Option(50, min=1, help="times each dashboard query is timed"),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """N WebSocket clients on a trading hub: fan-out latency, every event received, hub CPU;
    then the dashboard's REST queries with `--trades` trades stored."""
    import json

    from hub.runtime import configure_logging

    try:
        from hub.tools.bench.gateway import GatewayBenchConfig, format_table, run_gateway_bench
    except ImportError as exc:
        typer.echo(
            f"error: etp bench gateway needs the project's tools extra ({exc.name} is missing): "
            "run scripts/setup.sh, or .venv/bin/pip install -e '.[tools]'",
            err=True,
        )
        raise typer.Exit(1) from None
    configure_logging("warning")  # logs go to stderr; stdout carries only the result
    config = GatewayBenchConfig(
        clients=clients,
        duration_s=duration,
        trades=trades,
        batteries=batteries,
        processes=processes,
        deflate=deflate,
        query_rounds=query_rounds,
    )
    try:
        result = service.run_loop(run_gateway_bench(config))
    except Exception as exc:
        typer.echo(f"error: benchmark failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2) if json_out else format_table(result))


def main() -> None:
    """Entry point for `python -m hub.cli.main`."""
    app()


if __name__ == "__main__":
    main()
