"""`etp legacy bridge` and `etp legacy double`: batteries of the Go prototype in the ETP market
(hub/legacy/README.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

__all__ = ["app"]

app = typer.Typer(
    help="Migration path for batteries of the Go prototype (plain TCP on :4000, 14-field "
    "lines): `bridge` makes each one an ordinary ETP battery to the hub, with its own device "
    "id and key, and never lets it sell more than it offered; `double` runs a test double of "
    "such a battery to try the bridge without one. See hub/legacy/README.md.",
    no_args_is_help=True,
)


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "4000"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        _fail(f"--connect {text!r}: expected HOST:PORT (e.g. 192.168.1.20:4000)")
    return host.strip("[]"), int(port)


def _bundle(path: Path) -> tuple[dict[str, Any], Path | None]:
    from hub.security.devices import BundleError, read_bundle

    try:
        return read_bundle(path)
    except BundleError as exc:
        _fail(str(exc))


@app.command("bridge")
def bridge(
    connect: Annotated[
        list[str],
        typer.Option(
            "--connect",
            help="HOST:PORT of a legacy battery (it listens on :4000); repeat for several, "
            "each followed by its --device-id",
        ),
    ],
    device_id: Annotated[
        list[int],
        typer.Option(
            "--device-id",
            min=1,
            max=65535,
            help="ETP device id it trades under, one per --connect, in the same order "
            "(convention: 60000-65535, which `etp demo` counts as legacy)",
        ),
    ],
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="the hub's data directory: site master secret (master.key) for the "
            "device keys [env ETP_DATA_DIR]"
        ),
    ] = None,
    bundle: Annotated[
        list[Path] | None,
        typer.Option(
            "--bundle",
            help="a device bundle from `etp device add N` (repeatable): key generation and "
            "broker login of device N, used instead of the master secret",
        ),
    ] = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="the hub's broker, mqtt://HOST:PORT (default: the hub's settings)"),
    ] = None,
    mqtt_ca_file: Annotated[
        Path | None,
        typer.Option(help="mqtts://: CA certificate (PEM) of the broker (default: the system's)"),
    ] = None,
    site: Annotated[str | None, typer.Option(help="site id (default: ETP_SITE, site1)")] = None,
    audit_dir: Annotated[
        Path | None,
        typer.Option(help="the bridged batteries' audit trails (default <data dir>/legacy)"),
    ] = None,
    poll_ms: Annotated[
        int, typer.Option(min=100, help="Query each legacy battery this often (state, liveness)")
    ] = 1000,
    max_backoff_s: Annotated[
        float, typer.Option(min=0.1, help="longest wait between reconnect attempts")
    ] = 5.0,
    duration: Annotated[
        float | None, typer.Option(help="run this many seconds, then stop (default: Ctrl-C)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug | info | warning")] = "info",
) -> None:
    """Bridge legacy batteries into the ETP market: each appears to the hub as an ETP battery
    (birth, status, answers on its req topic, DeviceFailure when its battery is lost) and
    sells at most what its battery offered.

    Example: etp legacy bridge --connect 10.0.0.21:4000 --device-id 60001
    --connect 10.0.0.22:4000 --device-id 60002
    """
    from hub.cli.service import run_loop
    from hub.legacy import LEGACY_DEVICE_IDS, BridgeConfig, LegacyTarget
    from hub.runtime import configure_logging
    from hub.settings import Settings, load_master_secret

    if len(connect) != len(device_id):
        _fail(
            f"{len(connect)} --connect but {len(device_id)} --device-id: give one of each "
            "per legacy battery, in the same order"
        )
    if len(set(device_id)) != len(device_id):
        _fail("each legacy battery needs its own --device-id")
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    if site is not None:
        overrides["site"] = site
    try:
        settings = Settings(**overrides)
    except Exception as exc:
        _fail(f"invalid configuration: {exc}")
    bundles = {}
    for path in bundle or []:
        contents, bundle_ca = _bundle(path)
        bundles[contents["device_id"]] = contents
        if mqtt_ca_file is None:
            mqtt_ca_file = bundle_ca  # the site CA the bundle carries (mqtts:// brokers)
    unknown = set(bundles) - set(device_id)
    if unknown:
        _fail(f"--bundle for device {sorted(unknown)[0]}, which no --device-id names")
    targets = []
    for address, device in zip(connect, device_id, strict=True):
        host, port = _host_port(address)
        target = LegacyTarget(host, port, device)
        found = bundles.get(device)
        if found is not None:
            target.key = bytes.fromhex(str(found["key"]))
            target.notice_key = bytes.fromhex(str(found["notice_key"]))
            target.mqtt_username = found.get("mqtt_user")
            target.mqtt_password = found.get("mqtt_password")
        targets.append(target)
        if device not in LEGACY_DEVICE_IDS:
            typer.echo(
                f"note: device {device} is outside the legacy id range 60000-65535: "
                "it trades normally, but summaries will not count it as legacy"
            )
    master = None
    if any(t.key is None for t in targets):
        path = settings.master_secret_path()
        if not path.exists():
            _fail(
                f"no site master secret at {path}: give the hub's --data-dir, or a "
                "--bundle per device"
            )
        master = load_master_secret(path)
    configure_logging(log_level)
    config = BridgeConfig(
        targets=targets,
        mqtt_url=mqtt_url or settings.resolved_mqtt_url(),
        site=settings.site,
        master_secret=master,
        audit_dir=audit_dir or settings.data_dir / "legacy",
        poll_interval_s=poll_ms / 1000,
        backoff_max_s=max_backoff_s,
        mqtt_ca_file=mqtt_ca_file,
    )
    raise typer.Exit(run_loop(_run_bridge(config, duration)))


async def _run_bridge(config: Any, duration: float | None) -> int:
    from hub.cli.service import _install_stop, _sleep_or_stop
    from hub.legacy import LegacyBridge
    from hub.transport.mqtt import MqttError, TlsConfigError

    try:
        bridge = LegacyBridge(config)
    except (TlsConfigError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    stop = asyncio.Event()
    _install_stop(stop)
    try:
        await bridge.start()
    except (TimeoutError, OSError, MqttError) as exc:
        await bridge.stop()
        reason = str(exc) or "no connection in 10 s"
        typer.echo(f"error: cannot reach the broker at {config.mqtt_url}: {reason}", err=True)
        return 1
    typer.echo(
        f"legacy bridge: {len(config.targets)} legacy batter"
        f"{'y' if len(config.targets) == 1 else 'ies'} -> {config.mqtt_url} "
        f"(site {config.site}); Ctrl-C stops"
    )
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    try:
        while not stop.is_set():
            wait = 10.0 if deadline is None else min(10.0, deadline - loop.time())
            if wait <= 0:
                break
            await _sleep_or_stop(stop, wait)
            typer.echo(_stats_line(bridge.stats()))
    finally:
        final = bridge.stats()
        await bridge.stop()
    for stats in final:
        typer.echo(_stats_line([stats]))
    return 0


def _stats_line(stats: list[dict[str, Any]]) -> str:
    return "  ".join(
        f"[{s['device_id']} {s['legacy']} {'up' if s['link_up'] else 'DOWN'}: "
        f"{s['trades']} trades, {s['sold_wh'] / 1000:.2f} kWh sold, "
        f"{s['budget_wh'] / 1000:.2f} kWh left, {s['reconnects']} reconnects]"
        for s in stats
    )


@app.command("double")
def double(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port (0: any free)")] = 4000,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    legacy_id: Annotated[int, typer.Option(min=0, help="its legacy deviceID")] = 7,
    remaining_kwh: Annotated[float, typer.Option(min=0, help="energy stored")] = 9.0,
    total_kwh: Annotated[float, typer.Option(min=0, help="capacity")] = 10.0,
    pct_for_sale: Annotated[float, typer.Option(min=0, max=100, help="% offered")] = 50.0,
    reserve_cents: Annotated[float, typer.Option(min=0, help="reserve, cents/kWh")] = 20.0,
) -> None:
    """Run a TEST DOUBLE of a Go-prototype battery (not the prototype): it answers Query, Bid
    and BidConfirm as the prototype does, and keeps accepting bids after it sold out."""
    from hub.cli.service import run_loop

    raise typer.Exit(
        run_loop(
            _run_double(
                host, port, legacy_id, remaining_kwh, total_kwh, pct_for_sale, reserve_cents
            )
        )
    )


async def _run_double(
    host: str,
    port: int,
    legacy_id: int,
    remaining_kwh: float,
    total_kwh: float,
    pct: float,
    reserve_cents: float,
) -> int:
    from hub.cli.service import _install_stop
    from hub.legacy import DoubleConfig, LegacyBatteryDouble

    config = DoubleConfig(
        device_id=legacy_id,
        host=host,
        port=port,
        energy_total_wh=round(total_kwh * 100) * 10,
        remaining_wh=round(remaining_kwh * 100) * 10,
        pct_for_sale=round(pct * 100),
        reserve_mc=round(reserve_cents * 100) * 10,
    )
    battery = LegacyBatteryDouble(config)
    try:
        await battery.start()
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port}: {exc}", err=True)
        return 1
    typer.echo(f"legacy battery test double on {host}:{battery.port} (Ctrl-C stops)")
    stop = asyncio.Event()
    _install_stop(stop)
    await stop.wait()
    await battery.stop()
    typer.echo(
        f"sold {len(battery.confirmed)} times, {battery.sold_wh / 1000:.2f} kWh "
        f"(offered {battery.offered_wh / 1000:.2f})"
    )
    return 0
