"""Broker password hashes: the format Mosquitto itself writes and reads."""

import shutil
import subprocess

import pytest

from hub.security.accounts import hash_password, verify_password


def test_hash_round_trip_and_wrong_password() -> None:
    encoded = hash_password("s3cret")
    assert encoded.startswith("$7$101$")
    assert verify_password("s3cret", encoded)
    assert not verify_password("s3cret!", encoded)
    assert not verify_password("s3cret", "$6$abc$def")
    assert not verify_password("s3cret", "garbage")


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_reads_what_mosquitto_passwd_writes(tmp_path) -> None:
    path = tmp_path / "pw"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "bess-7", "s3cret"], check=True)
    encoded = path.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret", encoded)
    assert not verify_password("other", encoded)
