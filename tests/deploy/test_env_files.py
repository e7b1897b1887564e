"""deploy/env/{dev,staging,prod}.env: configuration only through real ETP_* settings, each
file loads into Settings, and production refuses plain text and anonymous brokers (checked
with the hub's own TLS rule against a real site PKI)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hub.security.pki import site_pki
from hub.security.tls import plan_site_tls
from hub.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ENV_DIR = REPO / "deploy" / "env"
ENVIRONMENTS = ["dev", "staging", "prod"]
_LINE = re.compile(r"^(ETP_[A-Z0-9_]+)=([^\s'\"]*)$")


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blank lines skipped); a line of any other shape fails,
    since systemd, the shell (etp-site) and compose must all read it the same way."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        match = _LINE.match(raw)
        assert match, f"{path.name}:{number}: expected ETP_NAME=VALUE without spaces or quotes"
        assert match[1] not in values, f"{path.name}:{number}: {match[1]} given twice"
        values[match[1]] = match[2]
    return values


def setting_name(variable: str) -> str:
    return variable.removeprefix("ETP_").lower()


@pytest.fixture(autouse=True)
def _no_outer_etp_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The files alone decide (environment variables would override them)."""
    import os

    for name in list(os.environ):
        if name.startswith("ETP_"):
            monkeypatch.delenv(name)


def load(environment: str, **overrides: Any) -> Settings:
    return Settings(_env_file=ENV_DIR / f"{environment}.env", **overrides)  # type: ignore[call-arg]


def test_only_the_three_environments_exist() -> None:
    assert sorted(p.stem for p in ENV_DIR.glob("*.env")) == sorted(ENVIRONMENTS)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_variable_is_a_setting(environment: str) -> None:
    variables = parse_env_file(ENV_DIR / f"{environment}.env")
    unknown = [v for v in variables if setting_name(v) not in Settings.model_fields]
    assert not unknown, f"{environment}.env: not fields of hub.settings.Settings: {unknown}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_settings_load_each_file(environment: str) -> None:
    variables = parse_env_file(ENV_DIR / f"{environment}.env")
    settings = load(environment)
    for variable in variables:  # every line took effect (none ignored as unknown)
        assert setting_name(variable) in settings.model_fields_set, variable
    assert settings.data_dir == Path("/var/lib/etp")


def test_the_parser_rejects_what_the_readers_disagree_on(tmp_path: Path) -> None:
    bad = tmp_path / "bad.env"
    bad.write_text('ETP_SITE="site 1"\n')
    with pytest.raises(AssertionError):
        parse_env_file(bad)


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_shared_sites_use_mosquitto_and_postgresql_over_tls(environment: str) -> None:
    settings = load(environment)
    assert settings.mqtt_url is not None and settings.mqtt_url.startswith("mqtts://")
    assert settings.resolved_database_url().startswith("postgresql+psycopg://")
    assert settings.allow_plaintext is False
    assert settings.broker_locked is True
    assert settings.require_provisioning is True
    assert settings.log_format == "json"
    assert "ETP_HTTP_PORT" not in parse_env_file(ENV_DIR / f"{environment}.env"), (
        "each worker's port comes from /etc/etp/worker-N.env"
    )


def test_prod_asks_tls_everywhere() -> None:
    variables = parse_env_file(ENV_DIR / "prod.env")
    assert variables.get("ETP_ALLOW_PLAINTEXT", "false").lower() in ("false", "0", "no")
    settings = load("prod")
    assert settings.tls == "on"
    assert settings.settlement_network == "mainnet"


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_the_hub_s_tls_rule_passes_with_the_site_certificates(
    environment: str, tmp_path: Path
) -> None:
    """With `etp pki init` done, the hub's own rule (what `etp hub` checks before it starts)
    accepts the configuration without a plain-text warning: the link to Mosquitto verifies
    the site CA and the gateway serves HTTPS."""
    pki = site_pki(tmp_path)
    pki.init(["hub.test"], days=2, site="site1")
    settings = load(environment, data_dir=tmp_path, mqtt_ca_file=pki.ca_cert, http_port=8001)
    plan = plan_site_tls(settings)
    assert plan.warnings == ()
    assert plan.link_url.startswith("mqtts://")
    assert plan.link_ca_file == pki.ca_cert
    assert plan.gateway_cert is not None


def test_prod_without_certificates_is_refused(tmp_path: Path) -> None:
    from hub.security.tls import TlsSetupError

    with pytest.raises(TlsSetupError):
        plan_site_tls(load("prod", data_dir=tmp_path, mqtt_ca_file=tmp_path / "pki" / "ca.crt"))


def test_dev_allows_plain_text_on_its_closed_network(tmp_path: Path) -> None:
    settings = load("dev", data_dir=tmp_path)
    assert settings.embedded_broker and settings.database_url is None
    plan = plan_site_tls(settings)
    assert plan.gateway_cert is None and plan.warnings, "dev warns about its plain listeners"
