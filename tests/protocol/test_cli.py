"""`etp proto` and `etp bench proto` as a user runs them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ETP = [str(Path(sys.executable).with_name("etp"))]
KEY = "ab" * 32


def etp(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*ETP, *args], capture_output=True, text=True, input=stdin, timeout=120)


def test_help_lists_every_subcommand():
    result = etp("--help")
    assert result.returncode == 0
    for name in ("proto", "bench"):
        assert name in result.stdout


def test_encode_then_decode_round_trip():
    fields = {"dst": 7, "src": 1001, "auc": 42, "price": 21500, "ereq": 5000}
    encoded = etp(
        "proto",
        "encode",
        "--type",
        "bid",
        "--json",
        json.dumps(fields),
        "--key-hex",
        KEY,
        "--key-id",
        "7",
    )
    assert encoded.returncode == 0, encoded.stderr
    frame = encoded.stdout.strip()
    assert len(bytes.fromhex(frame)) <= 96
    decoded = etp("proto", "decode", "--key-hex", KEY, frame)
    assert decoded.returncode == 0, decoded.stderr
    msg = json.loads(decoded.stdout)
    assert msg["tag_verified"] is True
    assert (msg["type_name"], msg["kid"], msg["price"], msg["src"]) == ("bid", 7, 21500, 1001)


def test_tampered_frame_exits_non_zero_with_reason():
    frame = etp(
        "proto", "encode", "--type", "3", "--json", '{"auc":1,"price":1,"ereq":1}', "--key-hex", KEY
    ).stdout.strip()
    tampered = frame[:-2] + ("00" if frame[-2:] != "00" else "01")
    result = etp("proto", "decode", "--key-hex", KEY, tampered)
    assert result.returncode == 1
    assert "bad_tag" in result.stderr
    assert json.loads(result.stdout)["tag_verified"] is False
    wrong_key = etp("proto", "decode", "--key-hex", "cd" * 32, frame)
    assert wrong_key.returncode == 1 and "bad_tag" in wrong_key.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--type", "bogus", "--json", "{}"], "unknown message type"),
        (["--type", "bid", "--json", "{nope"], "not JSON"),
        (["--type", "bid", "--json", '{"colour": 1}'], "unknown field"),
        (["--type", "bid", "--json", '{"auc": 1}'], "requires field price"),
        (["--type", "bid", "--json", '{"auc": 1, "price": -1, "ereq": 1}'], "out_of_range"),
    ],
)
def test_encode_errors_are_readable(args, message):
    result = etp("proto", "encode", *args, "--key-hex", KEY)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_decode_garbage_is_a_protocol_error_not_a_crash():
    result = etp("proto", "decode", "--key-hex", KEY, "a0" + "00" * 32)
    assert result.returncode == 1
    assert "rejected (" in result.stderr and "Traceback" not in result.stderr
    assert etp("proto", "decode", "--key-hex", KEY, "xyz").returncode == 2


def test_legacy_line_round_trip():
    line = "3 48213 7 5 21.50 0.00 100.00 55.25 5.00 0 80.00 0 48.20 -1.50"
    result = etp("proto", "legacy", line)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["legacy"] == line
    assert out["message"]["price"] == 21500 and out["message"]["dis"] == -1500
    bad = etp("proto", "legacy", "3 1 2")
    assert bad.returncode == 2 and "expected 14 fields" in bad.stderr


@pytest.mark.micropython
def test_bench_proto_reports_both_interpreters(micropython):
    result = etp("bench", "proto", "--json", "--seconds", "0.05")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    interpreters = [run["interpreter"] for run in report["runs"]]
    assert interpreters == ["cpython", "micropython"]
    for run in report["runs"]:
        assert run["encode_sign_us"] > 0 and run["verify_decode_us"] > 0
        assert set(run["frame_bytes"]) >= {"bid", "bess_status", "device_failure"}
    assert "bid frame <= 96 bytes" in report["verdicts"]
    table = etp("bench", "proto", "--seconds", "0.02", "--no-micropython")
    assert table.returncode == 0 and "encode+sign" in table.stdout
