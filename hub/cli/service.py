"""`etp hub`, `etp demo` and `etp bench hub`: run the hub, the full demo, and its benchmark."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar

import typer

from hub.settings import Settings

__all__ = ["bench_hub", "demo", "hub"]

_T = TypeVar("_T")


# Demo chargers: one auction per battery every ~1.5 s sells up to a kWh, so a charger that
# keeps up with about half of that (1 kWh per 3 s) keeps the fleet trading indefinitely.
DEMO_CHARGE_W = 1_200_000


def _settings(**overrides: Any) -> Settings:
    """Settings from ETP_* env, with the flags that were given taking precedence."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except Exception as exc:  # pydantic validation: show the message, not a traceback
        typer.echo(f"error: invalid configuration: {exc}", err=True)
        raise typer.Exit(2) from None


def _install_stop(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def run_loop(main: Coroutine[Any, Any, _T]) -> _T:
    """Run the coroutine on uvloop when it is installed (faster I/O), else on asyncio."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def hub(
    data_dir: Annotated[Path | None, typer.Option(help="data directory [env ETP_DATA_DIR]")] = None,
    database_url: str | None = typer.Option(None, help="SQLAlchemy URL [ETP_DATABASE_URL]"),
    mqtt_url: str | None = typer.Option(
        None,
        help="external broker mqtt://HOST[:1883], or mqtts://HOST[:8883] for TLS (the broker's "
        "certificate is verified and must name HOST); USER:PASSWORD@HOST is accepted and never "
        "shown; default: embedded amqtt [ETP_MQTT_URL]",
    ),
    mqtt_host: str | None = typer.Option(None, help="embedded broker address"),
    mqtt_port: int | None = typer.Option(None, help="embedded broker port (1883)"),
    mqtt_username: str | None = typer.Option(
        None, help="user name the hub logs in to the broker with [ETP_MQTT_USERNAME]"
    ),
    mqtt_password: str | None = typer.Option(
        None,
        help="its password; prefer the env var ETP_MQTT_PASSWORD (a flag is visible to other "
        "users in `ps`) [ETP_MQTT_PASSWORD]",
    ),
    mqtt_ca_file: Annotated[
        Path | None,
        typer.Option(
            help="mqtts://: CA certificate (PEM) the broker's certificate must chain to; "
            "default: the system's trusted CAs [ETP_MQTT_CA_FILE]"
        ),
    ] = None,
    mqtt_cert_file: Annotated[
        Path | None,
        typer.Option(
            help="mqtts://: client certificate (PEM) for brokers that require one "
            "[ETP_MQTT_CERT_FILE]"
        ),
    ] = None,
    mqtt_key_file: Annotated[
        Path | None,
        typer.Option(
            help="private key (PEM) of --mqtt-cert-file, unless it is in that file "
            "[ETP_MQTT_KEY_FILE]"
        ),
    ] = None,
    http_host: str | None = typer.Option(None, help="HTTP gateway address"),
    http_port: int | None = typer.Option(None, help="HTTP gateway port (8000)"),
    tls: str | None = typer.Option(
        None,
        help="auto: a broker or gateway bound to a non-loopback address (e.g. --mqtt-host "
        "0.0.0.0) serves mqtts:// on 8883 / https:// with the site's certificates (`etp pki "
        "init`) and the hub refuses to start without them (ETP_ALLOW_PLAINTEXT=true accepts "
        "plain text, with a warning); on loopback plain TCP. on: TLS on loopback too "
        "[ETP_TLS]",
    ),
    site: str | None = typer.Option(None, help="site id (site1)"),
    mechanism: str | None = typer.Option(None, help="ascending | second_price"),
    aggregators: int | None = typer.Option(None, help="number of aggregators (3)"),
    log_level: str | None = typer.Option(None, help="debug | info | warning"),
    log_format: str | None = typer.Option(None, help="console | json"),
    worker: bool = typer.Option(
        False,
        "--worker",
        help="run as one of several hub workers of one site: every worker points at the same "
        "external broker (--mqtt-url) and PostgreSQL (--database-url); batteries are shared out "
        "by leases in the database and move to the others within seconds when a worker stops or "
        "dies (docs/scaling.md) [ETP_WORKER]",
    ),
) -> None:
    """Run the hub: broker, aggregators, auction driver, store and HTTP gateway (Ctrl-C stops).

    With --worker, one of several hub processes sharing a site (start as many as the site
    needs, on one machine or several; each with its own --http-port)."""
    settings = _settings(
        data_dir=data_dir,
        database_url=database_url,
        mqtt_url=mqtt_url,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        mqtt_username=mqtt_username,
        mqtt_password=mqtt_password,
        mqtt_ca_file=mqtt_ca_file,
        mqtt_cert_file=mqtt_cert_file,
        mqtt_key_file=mqtt_key_file,
        http_host=http_host,
        http_port=http_port,
        tls=tls,
        site=site,
        mechanism=mechanism,
        aggregators=aggregators,
        log_level=log_level,
        log_format=log_format,
        worker=worker or None,
    )
    _check_tls(settings)
    code = run_loop(_run_hub(settings))
    raise typer.Exit(code)


def _check_tls(settings: Settings) -> None:
    """Refuse, before anything starts, a hub that would carry plain text beyond this machine
    or that asks for TLS without certificates (hub/security/tls.py has the rule)."""
    from hub.security.tls import TlsSetupError, plan_site_tls

    try:
        plan_site_tls(settings)
    except TlsSetupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


async def _run_hub(settings: Settings) -> int:
    from hub.runtime import HubRuntime, configure_logging

    configure_logging(settings.log_level, settings.log_format)
    runtime = HubRuntime(settings)
    stop = asyncio.Event()
    _install_stop(stop)
    try:
        await runtime.start()
    except Exception as exc:
        await runtime.stop()
        typer.echo(f"error: hub failed to start: {exc}", err=True)
        return 1
    typer.echo(f"ETP hub running: mqtt {runtime.mqtt_url}, http {runtime.http_url} (Ctrl-C stops)")
    for line in _tls_lines(runtime, settings):
        typer.echo(line)
    if runtime.store is not None and not await runtime.store.list_api_keys(include_revoked=False):
        typer.echo(
            "no API keys yet: /api/v1 answers 401 until one is made with "
            "`etp apikey create --name N --role viewer` (same --data-dir / ETP_DATABASE_URL)"
        )
    await stop.wait()
    typer.echo("stopping...")
    await runtime.stop()
    return 0


def _tls_lines(runtime: Any, settings: Settings) -> list[str]:
    """Where boards and browsers reach a TLS hub (the names its certificates hold), since the
    hub's own URLs may be a wildcard bind or its loopback link."""
    from hub.security.pki import certificate_names, site_pki

    tls = runtime.tls
    if tls is None:
        return []
    lines = []
    if tls.broker_tls is not None:
        names = certificate_names(tls.broker_tls.cert)
        lines.append(
            f"boards: mqtts://{names[0]}:{tls.broker_port} (or {', '.join(names[1:])}) with "
            f"`etp firmware flash --ca-file {tls.broker_tls.ca_cert}`"
        )
    if tls.gateway_https and settings.http_enabled:
        pki = site_pki(settings.data_dir)
        gateway = pki.gateway
        if gateway is not None and tls.gateway_cert == gateway.cert:
            names = certificate_names(gateway.cert)
            lines.append(
                f"dashboard: https://{names[0]}:{settings.http_port} (site CA {pki.ca_cert}: "
                "import it into the browser's trust store)"
            )
    return lines


def demo(
    batteries: int = typer.Option(10, help="simulated batteries (real firmware, unix port)"),
    aggregators: int = typer.Option(3, help="aggregators with different strategies"),
    duration: float | None = typer.Option(None, help="run this many seconds, then stop"),
    data_dir: Annotated[Path, typer.Option(help="data directory")] = Path(".etp/demo"),
    http_port: int | None = typer.Option(None, help="HTTP gateway port (8000)"),
    mqtt_port: int | None = typer.Option(None, help="embedded broker port (1883)"),
    mechanism: str | None = typer.Option(None, help="ascending | second_price"),
    heap: str = typer.Option("80K", help="MicroPython heap per board (the node needs 64K)"),
    log_level: str = typer.Option("warning", help="hub log level"),
    legacy_batteries: int = typer.Option(
        0,
        min=0,
        max=1000,
        help="also K test doubles of Go-prototype batteries, traded through the "
        "legacy bridge as devices 60001.. (hub/legacy/README.md)",
    ),
) -> None:
    """Hub + embedded broker + SQLite + a fleet of batteries running the real firmware."""
    settings = _settings(
        data_dir=data_dir,
        aggregators=aggregators,
        http_port=http_port,
        mqtt_port=mqtt_port,
        mechanism=mechanism,
        log_level=log_level,
        mqtt_url=None,
    )
    settings.mqtt_url = None  # the demo always uses the embedded broker
    if "aggregator_demand_scale" not in settings.model_fields_set:
        settings.aggregator_demand_scale = balanced_demand_scale(
            settings, batteries + legacy_batteries
        )
    _check_tls(settings)
    code = run_loop(_run_demo(settings, batteries, duration, heap, legacy_batteries))
    raise typer.Exit(code)


def balanced_demand_scale(settings: Settings, batteries: int) -> int:
    """The demand scale at which the default aggregators want about what `batteries` can
    offer in a trading period (one lot per auction interval each), so a demo market trades
    steadily with competition instead of selling out or starving (ETP_AGGREGATOR_DEMAND_SCALE
    overrides it)."""
    from hub.buyers.aggregator import default_aggregators

    period_ms = settings.trading_period_ms or 60_000
    supply_wh = batteries * settings.lot_wh * period_ms // settings.auction_interval_ms
    configs = default_aggregators(max(1, settings.aggregators), settings.seed)
    demand_wh = sum(config.energy_requirement_wh for config in configs)
    return max(1, round(supply_wh / demand_wh))


async def _run_demo(
    settings: Settings, batteries: int, duration: float | None, heap: str, legacy_count: int = 0
) -> int:
    from hub.legacy.demo import DemoLegacy
    from hub.runtime import HubRuntime, configure_logging
    from hub.settings import load_master_secret
    from hub.tools.firmware.fleet import FleetConfig, start_fleet

    configure_logging(settings.log_level, settings.log_format)
    runtime = HubRuntime(settings)
    stop = asyncio.Event()
    _install_stop(stop)
    try:
        await runtime.start()
    except Exception as exc:
        await runtime.stop()
        typer.echo(f"error: hub failed to start: {exc}", err=True)
        return 1
    fleet = None
    try:
        fleet = await start_fleet(
            FleetConfig(
                count=batteries,
                mqtt_url=runtime.mqtt_url,
                site=settings.site,
                master_secret=load_master_secret(settings.master_secret_path()),
                data_dir=settings.data_dir / "boards",
                ptys=False,
                heap=heap,
                seed=settings.seed,
                # A sold kWh is delivered over an hour (keeps the packs' current sane), and each
                # site's charger refills its pack: the demo compresses a trading day into
                # minutes, so the charger is as compressed as the auction cadence.
                overrides={"delivery_s": 3600, "charge_w": DEMO_CHARGE_W, **_board_tls(runtime)},
            )
        )
    except Exception as exc:
        await runtime.stop()
        typer.echo(f"error: could not start the battery fleet: {exc}", err=True)
        return 1
    legacy = DemoLegacy(legacy_count, settings.seed, DEMO_CHARGE_W)
    try:
        await legacy.start(
            runtime.mqtt_url, settings.site, load_master_secret(settings.master_secret_path())
        )
    except Exception as exc:
        await legacy.stop()
        await fleet.stop()
        await runtime.stop()
        typer.echo(f"error: could not start the legacy batteries: {exc}", err=True)
        return 1
    typer.echo(
        f"ETP demo: {batteries} batteries (MicroPython firmware), "
        f"{len(runtime.auctions.aggregators) if runtime.auctions else 0} aggregators, "
        f"mechanism {settings.mechanism}"
        + (f", {legacy_count} legacy batteries via the bridge" if legacy_count else "")
    )
    for line in await _demo_key_lines(runtime, settings):
        typer.echo(line)
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    final_line = ""
    tty = sys.stdout.isatty()
    warned = False
    try:
        while not stop.is_set():
            remaining = 1.0 if deadline is None else min(1.0, deadline - loop.time())
            if remaining <= 0:
                break
            await _sleep_or_stop(stop, remaining)
            line = runtime.summary_line() + legacy.status_suffix()
            if fleet.alive() < batteries and not warned:
                warned = True
                dead = [
                    b
                    for b in fleet.devices
                    if b.process is None or b.process.returncode is not None
                ]
                if dead:
                    typer.echo(
                        f"\nwarning: {len(dead)} board(s) exited; see {dead[0].console_log}",
                        err=True,
                    )
            if tty:
                sys.stdout.write("\r\x1b[2K" + line)
                sys.stdout.flush()
            else:
                typer.echo(line)
    finally:
        if tty:
            sys.stdout.write("\n")
        if runtime.auctions is not None:
            await runtime.auctions.stop()  # finish trades being confirmed while boards still run
        final_line = runtime.summary_line() + legacy.status_suffix()
        if runtime.registry is not None:
            runtime.registry.expect_departures = True
        store = runtime.store
        verified = await store.list_trades("verified") if legacy_count and store else []
        await legacy.stop()
        await fleet.stop()
        await runtime.stop()
    market = runtime.auctions.summary() if runtime.auctions else {}
    typer.echo("")
    typer.echo("summary: " + final_line)
    for line in legacy.summary_lines(verified):
        typer.echo(line)
    settled = runtime.status()["settlement"]
    if settled["network"] != "off":
        typer.echo(
            f"  settlement ({settled['network']}): {settled['settled']} settled, "
            f"{settled['pending'] + settled['submitted']} waiting, {settled['failed']} failed"
            + (f" ({settled['last_error']})" if settled["last_error"] else "")
        )
    for agg in market.get("aggregators", []):
        typer.echo(
            f"  aggregator {agg['id']} {agg['name']:<12} wins {agg['wins']:>4}  "
            f"success {agg['success_rate']:.0%}  bought {agg['energy_bought_wh'] / 1000:.1f} kWh"
            f"  spent {agg['spent_mc'] / 100000:.2f} $"
        )
    typer.echo(f"data: {settings.data_dir}   report: etp report --data-dir {settings.data_dir}")
    return 0


async def _demo_key_lines(runtime: Any, settings: Settings) -> list[str]:
    """The dashboard's address with a viewer key in its fragment (a fresh key each start: the
    previous demo viewer key is revoked; the fragment never reaches a server or a log), and on
    the first start (no keys yet) an operator key, shown this once (only hashes are stored)."""
    from hub.auth import Role

    keys = await runtime.store.list_api_keys(include_revoked=False)
    lines: list[str] = []
    if not keys:
        operator = await runtime.api_keys.create(_DEMO_OPERATOR, Role.OPERATOR)
        lines.append(f"API key (operator, shown once): {operator.key}")
    else:
        lines.append(
            "operator key: made on the first start (shown then only); list keys with "
            f"`etp apikey list --data-dir {settings.data_dir}`, make one with "
            f"`etp apikey create --data-dir {settings.data_dir} --name N --role operator`"
        )
    for row in keys:
        if row.name == _DEMO_VIEWER:
            await runtime.api_keys.revoke(row.id)
    viewer = await runtime.api_keys.create(_DEMO_VIEWER, Role.VIEWER)
    trust = ""
    if runtime.tls is not None and runtime.tls.gateway_https:
        from hub.security.pki import site_pki

        trust = f"--cacert {site_pki(settings.data_dir).ca_cert} "  # ETP_TLS=on: the site CA
    return [
        f"dashboard: {runtime.http_url}/#key={viewer.key}   (Ctrl-C stops)",
        *lines,
        f"  call the API with: curl {trust}-H 'Authorization: Bearer <key>' "
        f"{runtime.http_url}/api/v1/status",
    ]


_DEMO_OPERATOR, _DEMO_VIEWER = "demo-operator", "demo-viewer"


def _board_tls(runtime: Any) -> dict[str, str]:
    """The demo boards' TLS setting: the site CA when the embedded broker speaks TLS (ETP_TLS=on
    with `etp pki init` done), nothing on the demo's usual plain loopback."""
    tls = runtime.tls
    if tls is None or tls.broker_tls is None:
        return {}
    return {"mqtt_ca_file": str(tls.broker_tls.ca_cert)}


def bench_hub(
    batteries: int = typer.Option(1000, help="simulated batteries (CPython NodeCore)"),
    aggregators: int = typer.Option(10, help="aggregators"),
    duration: float = typer.Option(20.0, help="measured seconds"),
    rate: int = typer.Option(
        0,
        help="target auctions/s across the fleet (0 = as fast as "
        "each battery's auction cadence allows)",
    ),
    broker: str = typer.Option("embedded", help="embedded | mosquitto"),
    mqtt_url: str | None = typer.Option(None, help="use this external broker instead"),
    connections: int = typer.Option(
        1,
        help="MQTT connections the simulated fleet shares (each one receives every request, "
        "so more connections multiply the broker's work)",
    ),
    status_ms: int = typer.Option(5000, help="battery status period, ms"),
    mechanism: str = typer.Option("ascending", help="ascending | second_price"),
    workers: str | None = typer.Option(
        None,
        help="run hub workers (`etp hub --worker`) on Mosquitto + PostgreSQL instead of one "
        "hub: N, or a list such as 1,2 to compare (one run each, same fleet and load)",
    ),
    database_url: str | None = typer.Option(
        None, help="with --workers: an empty PostgreSQL database (default: a throwaway server)"
    ),
    json_out: bool = typer.Option(False, "--json", help="print JSON instead of a table"),
) -> None:
    """Drive the hub with simulated batteries; print msg/s, latency, misses, losses, CPU, RSS.

    With --workers: the same for N hub workers sharing the site, and where the CPU went."""
    from hub.runtime import configure_logging

    try:
        from hub.tools.bench.hub import BenchConfig, run_bench
    except ImportError as exc:
        _fail(
            f"etp bench hub needs the project's tools extra ({exc.name} is missing): "
            "run scripts/setup.sh, or .venv/bin/pip install -e '.[tools]'"
        )
    configure_logging("warning")  # logs go to stderr; stdout carries only the result
    if broker not in ("embedded", "mosquitto"):
        _fail("--broker must be embedded or mosquitto")
    mode: Literal["embedded", "mosquitto"] = "embedded" if broker == "embedded" else "mosquitto"
    config = BenchConfig(
        batteries=batteries,
        aggregators=aggregators,
        duration_s=duration,
        auctions_per_s=rate,
        broker=mode,
        mqtt_url=mqtt_url,
        connections=connections,
        status_ms=status_ms,
        mechanism=mechanism,
    )
    if workers is not None:
        _bench_workers(config, workers, database_url, json_out)
        return
    try:
        result = run_loop(run_bench(config))
    except Exception as exc:
        _fail(f"benchmark failed: {exc}")
        return
    if json_out:
        import json

        typer.echo(json.dumps(result, indent=2))
    else:
        from hub.tools.bench.hub import format_table

        typer.echo(format_table(result))


def _bench_workers(config: Any, workers: str, database_url: str | None, json_out: bool) -> None:
    """`etp bench hub --workers 1,2`: one run per count, then the comparison table."""
    from hub.tools.bench.workers import format_workers_table, run_workers_bench

    try:
        counts = [int(part) for part in workers.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1 or max(counts) > 64:
        _fail("--workers takes a count (1..64) or a list of counts such as 1,2")
    if config.broker == "embedded" and config.mqtt_url is None:
        config.broker = "mosquitto"  # workers share an external broker
    results = []
    for count in counts:
        typer.echo(f"running {count} worker(s) for {config.duration_s:.0f} s ...", err=True)
        try:
            results.append(run_loop(run_workers_bench(config, count, database_url)))
        except Exception as exc:
            _fail(f"benchmark failed with {count} worker(s): {exc}")
    if json_out:
        import json

        typer.echo(json.dumps(results, indent=2))
    else:
        typer.echo(format_workers_table(results))
