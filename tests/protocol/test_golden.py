"""Golden vectors: the same bytes on CPython (cbor2 path and pure codec) and MicroPython."""

import json
import subprocess
import sys

import cbor2
import pytest

from shared_etp import cbor as pure
from shared_etp.schema import FIELD_KEY
from tests.conftest import REPO

VECTORS = json.loads((REPO / "tests/golden/vectors.json").read_text())


def run_checker(interpreter: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [interpreter, "tests/golden/check_vectors.py", str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_golden_vectors_on_cpython():
    result = run_checker(sys.executable)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed" in result.stdout


@pytest.mark.micropython
def test_golden_vectors_on_micropython(micropython):
    result = run_checker(micropython)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failed (micropython)" in result.stdout


@pytest.mark.parametrize("vector", VECTORS["valid"], ids=lambda v: v["name"])
def test_pure_codec_and_cbor2_agree_on_every_message(vector):
    body = bytes.fromhex(vector["frame"])[:-32]
    int_map = {FIELD_KEY[name]: value for name, value in vector["message"].items()}
    assert pure.dumps(int_map) == body
    assert cbor2.dumps(int_map, canonical=True) == body
    assert pure.loads(body) == int_map == cbor2.loads(body)


def test_every_message_type_has_a_vector():
    names = {v["name"] for v in VECTORS["valid"]}
    assert {
        "register",
        "query",
        "query_response",
        "bid",
        "bid_accept",
        "bid_confirm",
        "bid_reject",
        "terminate",
        "device_failure",
        "bess_status",
    } <= names


def test_bid_frame_fits_96_bytes():
    bid = next(v for v in VECTORS["valid"] if v["name"] == "bid")
    assert len(bytes.fromhex(bid["frame"])) <= 96
