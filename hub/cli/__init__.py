"""The `etp` command line: one Typer app, one module per subcommand group."""
