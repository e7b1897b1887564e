"""The broker's topic rules and access files without a broker: MQTT matching, the ACL a
battery gets, the files read back, and reloading them (fail closed on a broken file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.security.accounts import BrokerAccount, hash_password
from hub.security.broker import (
    AccessFileError,
    BrokerConfigError,
    ReloadingAccess,
    accounts_from_password_file,
    filter_covers,
    read_site_access,
    topic_matches,
    write_mosquitto_config,
)

ACCOUNTS = [
    BrokerAccount("bess-7", hash_password("seven"), 7),
    BrokerAccount("hub", hash_password("hub-pw")),
    BrokerAccount("bess-12", hash_password("twelve"), 12),
]


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("etp/v1/s/bess/7/req", "etp/v1/s/bess/7/req", True),
        ("etp/v1/s/bess/7/req", "etp/v1/s/bess/77/req", False),
        ("etp/v1/s/market/#", "etp/v1/s/market/clearing", True),
        ("etp/v1/s/market/#", "etp/v1/s/market", True),
        ("etp/v1/s/market/#", "etp/v1/s/marketing/x", False),
        ("etp/v1/s/bess/+/status", "etp/v1/s/bess/8/status", True),
        ("etp/v1/s/bess/+/status", "etp/v1/s/bess/8/status/x", False),
        ("#", "$SYS/broker/uptime", False),
        ("#", "anything/at/all", True),
    ],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize(
    ("allowed", "requested", "expected"),
    [
        ("etp/v1/s/market/#", "etp/v1/s/market/#", True),
        ("etp/v1/s/market/#", "etp/v1/s/market/+", True),
        ("etp/v1/s/market/#", "etp/v1/s/#", False),
        ("etp/v1/s/market/#", "#", False),
        ("etp/v1/s/bess/7/req", "etp/v1/s/bess/+/req", False),
        ("etp/v1/s/bess/7/req", "etp/v1/s/bess/7/#", False),
        ("etp/v1/s/bess/7/req", "etp/v1/s/bess/7/req", True),
        ("etp/v1/s/bess/+/req", "etp/v1/s/bess/7/req", True),
        ("#", "#", True),
    ],
)
def test_filter_covers(allowed: str, requested: str, expected: bool) -> None:
    assert filter_covers(allowed, requested) is expected


def test_files_read_back_as_the_rules(tmp_path: Path) -> None:
    files = write_mosquitto_config(tmp_path, ACCOUNTS, site="s")
    access = read_site_access(files.password_file, files.acl_file)
    assert access.authenticate("bess-7", "seven")
    assert not access.authenticate("bess-7", "twelve")
    assert not access.authenticate(None, None)
    assert access.may_publish("bess-7", "etp/v1/s/bess/7/death")
    assert not access.may_publish("bess-7", "etp/v1/s/bess/12/death")
    assert not access.may_publish("bess-7", "etp/v1/s/bess/7/req")
    assert not access.may_publish("bess-7", "etp/v1/s/market/clearing")
    assert access.may_subscribe("bess-7", "etp/v1/s/market/#")
    assert not access.may_subscribe("bess-7", "#")
    assert not access.may_receive("bess-7", "etp/v1/s/bess/12/req")
    assert access.may_publish("hub", "etp/v1/s/bess/12/req")
    assert access.may_subscribe("hub", "#")
    assert not access.may_publish("nobody", "etp/v1/s/bess/7/status")
    by_name = {a.username: a for a in accounts_from_password_file(files.password_file)}
    assert by_name == {a.username: a for a in ACCOUNTS}


@pytest.mark.parametrize(
    "account",
    [
        BrokerAccount("bess 7", hash_password("x"), 7),
        BrokerAccount("bess-7:x", hash_password("x"), 7),
        BrokerAccount("bess-7", "plaintext", 7),
        BrokerAccount("root", hash_password("x")),
    ],
)
def test_unusable_accounts_rejected(tmp_path: Path, account: BrokerAccount) -> None:
    with pytest.raises(BrokerConfigError):
        write_mosquitto_config(tmp_path, [account], site="s")


def test_site_with_a_wildcard_rejected(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError):
        write_mosquitto_config(tmp_path, ACCOUNTS, site="s/#")


def test_reloads_changed_files_and_fails_closed(tmp_path: Path) -> None:
    now = [0.0]
    files = write_mosquitto_config(tmp_path, ACCOUNTS, site="s")
    rules = ReloadingAccess(files.password_file, files.acl_file, clock=lambda: now[0])
    assert rules.current().authenticate("bess-7", "seven")
    write_mosquitto_config(tmp_path, ACCOUNTS[1:], site="s")  # bess-7 removed
    now[0] = 0.5
    assert rules.current().authenticate("bess-7", "seven")  # not looked at yet
    now[0] = 1.0
    assert not rules.current().authenticate("bess-7", "seven")
    assert rules.current().authenticate("bess-12", "twelve")
    files.acl_file.write_text("pattern readwrite etp/v1/s/bess/%u/#\n")  # not our format
    now[0] = 2.0
    assert not rules.current().authenticate("hub", "hub-pw")  # everyone refused
    write_mosquitto_config(tmp_path, ACCOUNTS, site="s")
    now[0] = 3.0
    assert rules.current().authenticate("bess-7", "seven")


def test_missing_files_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(AccessFileError):
        ReloadingAccess(tmp_path / "passwords", tmp_path / "acl")
