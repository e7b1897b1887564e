"""Root of the `etp` command: registers every subcommand group."""

import typer

from hub.cli import proto

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
app.add_typer(bench_app, name="bench")
bench_app.command("proto")(proto.bench_proto)


def main() -> None:
    """Entry point for `python -m hub.cli.main`."""
    app()


if __name__ == "__main__":
    main()
