"""Root of the `etp` command: registers every subcommand group."""

import typer

from hub.cli import apikey, db, firmware, proto, report, service

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
app.command("hub")(service.hub)
app.command("demo")(service.demo)
app.command("report")(report.report)
bench_app.command("hub")(service.bench_hub)
bench_app.command("proto")(proto.bench_proto)
bench_app.command("firmware")(firmware.bench_firmware)
bench_app.command("store")(db.bench_store)


def main() -> None:
    """Entry point for `python -m hub.cli.main`."""
    app()


if __name__ == "__main__":
    main()
