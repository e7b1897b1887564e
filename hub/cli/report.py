"""`etp report`: write and print the competitive-pricing report from the hub's database."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["report"]


def report(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data directory (default: ETP_DATA_DIR, else ./.etp).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write report.md and report.png (default: DATA_DIR/report).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the numbers as JSON instead of Markdown.")
    ] = False,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed",
            help="Seed of the aggregators and counterfactual (default: ETP_SEED, as the hub used).",
            show_default=False,
        ),
    ] = None,
    aggregators: Annotated[
        int | None,
        typer.Option(
            "--aggregators",
            help="Replay this many default aggregators instead of those the hub recorded in "
            "its event log (default: the recorded ones, else ETP_AGGREGATORS).",
            show_default=False,
        ),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="Read this database instead of DATA_DIR/etp.db.",
            show_default=False,
        ),
    ] = None,
    simulate: Annotated[
        bool,
        typer.Option(
            "--simulate",
            help="Report on the built-in seeded scenario (10 batteries, 3 slots) instead of "
            "recorded data; nothing needs to have run.",
        ),
    ] = False,
) -> None:
    """Clearing prices vs reserve and the price improvement battery owners got compared with a
    single-aggregator counterfactual on the same offers and seed (Markdown + PNG chart)."""
    from hub.buyers.aggregator import default_aggregators
    from hub.report import NoReportDataError, write_report
    from hub.settings import Settings

    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if database_url is not None:
        overrides["database_url"] = database_url
    if seed is not None:
        overrides["seed"] = seed
    if aggregators is not None:
        overrides["aggregators"] = aggregators
    settings = Settings(**overrides)
    # The same aggregator set the hub builds (HubRuntime.start) so the counterfactual matches.
    configs = default_aggregators(
        max(1, settings.aggregators), settings.seed, settings.aggregator_demand_scale
    )
    try:
        if simulate:
            result = _simulated_report(settings, configs, out)
        else:
            result = write_report(
                settings.data_dir,
                out,
                seed=settings.seed,
                aggregators=configs,
                rules={"max_rounds": settings.max_rounds},
                database_url=settings.database_url,
                trading_period_ms=settings.trading_period_ms,
                prefer_recorded=aggregators is None,  # --aggregators: the user's set instead
            )
    except NoReportDataError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(result.as_json())
    else:
        typer.echo(result.markdown)
        typer.echo(f"\nwritten: {result.markdown_path} and {result.chart_path}", err=True)


def _simulated_report(settings: Any, configs: list[Any], out: Path | None) -> Any:
    """Simulate the default scenario with the site's mechanism and aggregators, then report."""
    from hub.auctions.simulation import default_scenario
    from hub.auctions.simulation import simulate as run_simulation
    from hub.report import build_report, from_simulation

    scenario = default_scenario(settings.seed, mechanism=settings.mechanism)
    result = run_simulation(scenario, configs)
    source = (
        f"simulation of the default scenario (seed {settings.seed}, {len(configs)} aggregators)"
    )
    return build_report(
        from_simulation(result, source=source),
        out or settings.data_dir / "report",
        seed=settings.seed,
        aggregators=configs,
    )
