"""`etp proto ...`: encode, decode and convert protocol messages by hand; `etp bench proto`."""

import json
import sys
from typing import Annotated

import typer

from shared_etp.compat import now_ms
from shared_etp.errors import ProtocolError
from shared_etp.frame import Keyring, Sender, decode_frame, encode_frame, parse_frame
from shared_etp.legacy import parse_legacy, to_legacy
from shared_etp.schema import FIELD_RANGE, HEADER_FIELDS, TYPE_NAMES, type_number

app = typer.Typer(help="Encode, decode and convert ETP protocol frames.", no_args_is_help=True)

KeyHex = Annotated[str, typer.Option("--key-hex", help="HMAC key as hex (at least 16 bytes).")]


def _key(key_hex: str) -> bytes:
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        raise typer.BadParameter("--key-hex is not hexadecimal") from None
    if len(key) < 16:
        raise typer.BadParameter("--key-hex must be at least 16 bytes (32 hex digits)")
    return key


def _fail(message: str, code: int = 1) -> None:
    typer.echo("error: " + message, err=True)
    raise typer.Exit(code)


def _named(msg: dict) -> dict:
    out = {"type_name": TYPE_NAMES[msg["t"]]}
    out.update(msg)
    return out


@app.command()
def encode(
    msg_type: Annotated[
        str, typer.Option("--type", help="Message type: name (bid, bid_accept, ...) or number 0-9.")
    ],
    fields_json: Annotated[
        str,
        typer.Option(
            "--json",
            help='Fields as JSON, e.g. \'{"dst": 7, "auc": 42, "price": 21500, "ereq": 5000}\'. '
            "Header fields you omit (v, id, src, ep, seq, ts, ttl, pri) are filled in.",
        ),
    ],
    key_hex: KeyHex,
    key_id: Annotated[int, typer.Option("--key-id", help="Key id written into the frame.")] = 0,
) -> None:
    """Build, sign and print one frame as hex."""
    try:
        number = type_number(msg_type)
        if not 0 <= number < len(TYPE_NAMES):
            raise ValueError("message type %d is not 0..9" % number)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--type") from None
    try:
        fields = json.loads(fields_json)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter("not JSON: %s" % exc, param_hint="--json") from None
    if not isinstance(fields, dict):
        raise typer.BadParameter("must be a JSON object", param_hint="--json")
    unknown = sorted(set(fields) - set(FIELD_RANGE) - {"type_name"})
    if unknown:
        raise typer.BadParameter(
            "unknown field(s) %s; known: %s" % (unknown, ", ".join(FIELD_RANGE)),
            param_hint="--json",
        )
    fields.pop("type_name", None)
    fields.pop("t", None)
    header = {name: fields.pop(name) for name in list(fields) if name in HEADER_FIELDS}
    sender = Sender(
        header.pop("src", 0), header.pop("kid", key_id), _key(key_hex), header.pop("ep", 1)
    )
    sender.seq = header.pop("seq", 0)
    msg = sender.stamp(
        number,
        dst=header.pop("dst", 0),
        msg_id=header.pop("id", None),
        ttl=header.pop("ttl", None),
        pri=header.pop("pri", None),
        **fields,
    )
    msg.update(header)  # v and ts, if given
    try:
        frame = encode_frame(msg, sender.key)
    except ProtocolError as exc:
        _fail(str(exc), 2)
    typer.echo(frame.hex())


@app.command()
def decode(
    frame_hex: Annotated[str, typer.Argument(help="The frame as hex.")],
    key_hex: KeyHex,
) -> None:
    """Print a frame's message as JSON and whether its tag verified; exit 1 if it did not."""
    try:
        frame = bytes.fromhex(frame_hex.strip())
    except ValueError:
        _fail("FRAME is not hexadecimal", 2)
    try:
        msg, _body, _tag = parse_frame(frame)
    except ProtocolError as exc:
        _fail("rejected (%s): %s" % (exc.code, exc.reason))
    keyring = Keyring()
    keyring.add(msg["kid"], _key(key_hex))
    verified, reason = True, "tag verified"
    try:
        decode_frame(frame, keyring)
    except ProtocolError as exc:
        verified, reason = False, "%s: %s" % (exc.code, exc.reason)
    out = _named(msg)
    out["age_ms"] = now_ms() - msg["ts"]
    out["tag_verified"] = verified
    typer.echo(json.dumps(out, indent=2))
    if not verified:
        _fail(reason)


@app.command()
def legacy(
    line: Annotated[
        str,
        typer.Argument(help="A Go prototype line (14 space-separated fields), or '-' for stdin."),
    ],
) -> None:
    """Convert a Go prototype line to JSON and back, showing the round trip is exact."""
    text = sys.stdin.read() if line == "-" else line
    try:
        msg = parse_legacy(text)
    except ProtocolError as exc:
        _fail("%s: %s" % (exc.code, exc.reason), 2)
    back = to_legacy(msg)
    typer.echo(json.dumps({"message": _named(msg), "legacy": back}, indent=2))
    if back.split() != text.split():
        typer.echo(
            "note: the line was normalised (e.g. 21.5 -> 21.50); values are identical", err=True
        )


def bench_proto(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    seconds: Annotated[float, typer.Option(help="Seconds to spend per measurement.")] = 0.5,
    micropython: Annotated[
        bool, typer.Option(help="Also measure on the MicroPython unix port.")
    ] = True,
) -> None:
    """Microseconds per encode+sign and verify+decode, and frame sizes (CPython, MicroPython)."""
    from hub.tools.bench.proto import BenchError, run_proto_bench

    try:
        report = run_proto_bench(seconds=seconds, include_micropython=micropython)
    except BenchError as exc:
        _fail(str(exc))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
    else:
        from hub.tools.bench.proto import format_report

        typer.echo(format_report(report))
