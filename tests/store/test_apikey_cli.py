"""`etp apikey create|list|revoke` as a user runs them: keys shown once, never listed, errors."""

import json
from pathlib import Path

from tests.store.test_store_cli import etp


def test_create_list_revoke_against_a_data_dir(tmp_path: Path):
    data = ["--data-dir", str(tmp_path)]
    made = etp("apikey", "create", "--name", "ops", "--role", "operator", *data)
    assert made.returncode == 0, made.stderr
    key = made.stdout.splitlines()[1]
    assert key.startswith("etp_1_") and len(key) > 45
    assert "Shown once" in made.stdout and "etp apikey revoke 1" in made.stdout

    as_json = etp("apikey", "create", "--name", "screen", "--role", "viewer", "--json", *data)
    assert as_json.returncode == 0, as_json.stderr
    viewer = json.loads(as_json.stdout)
    assert viewer["id"] == 2 and viewer["role"] == "viewer" and viewer["key"].startswith("etp_2_")

    table = etp("apikey", "list", *data)
    assert table.returncode == 0, table.stderr
    assert "ops" in table.stdout and "operator" in table.stdout and "active" in table.stdout
    listed = etp("apikey", "list", "--json", *data)
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["name"], r["role"], r["revoked_ms"]) for r in rows] == [
        (1, "ops", "operator", None), (2, "screen", "viewer", None),
    ]
    for secret in (key.split("_", 2)[2], viewer["key"].split("_", 2)[2]):
        assert secret not in table.stdout and secret not in listed.stdout

    revoked = etp("apikey", "revoke", "1", *data)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.startswith("revoked API key 1 (operator, ops)")
    assert "revoked" in etp("apikey", "list", *data).stdout.splitlines()[1]


def test_mistakes_are_explained(tmp_path: Path):
    data = ["--data-dir", str(tmp_path)]
    unknown = etp("apikey", "revoke", "42", *data)
    assert unknown.returncode == 1
    assert "no API key has id 42 (see `etp apikey list`)" in unknown.stderr
    bad_role = etp("apikey", "create", "--name", "x", "--role", "admin", *data)
    assert bad_role.returncode == 2 and "viewer" in bad_role.stderr
    assert "operator" in bad_role.stderr
    no_name = etp("apikey", "create", "--name", " ", "--role", "viewer", *data)
    assert no_name.returncode == 1 and "--name" in no_name.stderr
    assert "no API keys" in etp("apikey", "list", *data).stdout


def test_help_teaches_roles_and_headers_and_env(tmp_path: Path):
    group = etp("apikey", "--help")
    assert group.returncode == 0
    for text in ("Authorization: Bearer", "X-API-Key", "viewer", "operator", "shown once"):
        assert text in group.stdout, text
    create = etp("apikey", "create", "--help").stdout
    assert "viewer|operator" in create and "ETP_DATABASE_URL" in create


def test_works_against_etp_database_url(tmp_path: Path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'by-url.db'}"
    made = etp("apikey", "create", "--name", "n", "--role", "viewer", env={"ETP_DATABASE_URL": url})
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "by-url.db").exists()
    assert json.loads(etp("apikey", "list", "--json", env={"ETP_DATABASE_URL": url}).stdout)[0][
        "name"
    ] == "n"
