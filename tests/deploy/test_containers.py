"""deploy/Dockerfile and deploy/compose.yaml without a Docker daemon: the compose file parses,
its hub services are configured only through real ETP_* settings and run real `etp`
commands, every file they reference exists, start order waits on health; the image runs as
a non-root user with the `etp` entrypoint; its HEALTHCHECK probe answers for a real hub."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from hub.cli.main import app
from hub.settings import Settings
from tests.brokers import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
ENVIRONMENTS = ["dev", "staging", "prod"]
_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?([-?]))?([^}]*)\}")


def interpolate(text: str, values: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}: `values`, else the default, else
    a stand-in (what an operator would export)."""

    def one(match: re.Match[str]) -> str:
        name, kind, rest = match[1], match[2], match[3]
        if values and name in values:
            return values[name]
        return rest if kind == "-" else f"stand-in-{name.lower()}"

    return _INTERPOLATION.sub(one, text)


def load_compose(values: dict[str, str] | None = None) -> dict[str, Any]:
    return yaml.safe_load(interpolate((DEPLOY / "compose.yaml").read_text(), values))


COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
HUB_SERVICES = [name for name, service in SERVICES.items() if service.get("image") == "etp:latest"]


def etp_help(args: list[str]) -> str:
    """`etp ARGS --help` (in process): fails the test if ARGS is not a real command."""
    result = CliRunner().invoke(app, [*args, "--help"], terminal_width=200)
    assert result.exit_code == 0, f"`etp {' '.join(args)}` is not an etp command: {result.output}"
    return result.output


def check_etp_command(argv: list[str]) -> None:
    """The command part of ARGV exists and every --option it gives is in its help."""
    words = [w for w in argv if not w.startswith("-")]
    options = [w.split("=")[0] for w in argv if w.startswith("--")]
    text = etp_help(words)
    for option in options:
        assert option in text, f"`etp {' '.join(words)}` has no option {option}"


def test_compose_has_the_site_s_services() -> None:
    assert set(SERVICES) == {"mosquitto", "postgres", "migrate", "worker"}
    assert sorted(HUB_SERVICES) == ["migrate", "worker"]
    assert SERVICES["postgres"]["image"] == "postgres:15"
    assert SERVICES["mosquitto"]["image"].startswith("eclipse-mosquitto:")


@pytest.mark.parametrize("name", ["migrate", "worker"])
def test_hub_services_use_only_real_settings(name: str) -> None:
    environment = SERVICES[name]["environment"]
    unknown = [
        key
        for key in environment
        if not key.startswith("ETP_") or key[4:].lower() not in Settings.model_fields
    ]
    assert not unknown, f"{name}: not ETP_* fields of hub.settings.Settings: {unknown}"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_environment_s_file_exists_and_loads_under_compose(
    environment: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's configuration as compose gives it (env file, then `environment:` over
    it) loads into Settings and points at compose's own broker, database and volume."""
    worker = load_compose({"ETP_ENV": environment})["services"]["worker"]
    (env_file,) = worker["env_file"]
    path = DEPLOY / env_file
    assert path.is_file(), f"{env_file} (ETP_ENV={environment}) does not exist"
    for name in list(os.environ):
        if name.startswith("ETP_"):
            monkeypatch.delenv(name)
    for key, value in worker["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings(_env_file=path)  # type: ignore[call-arg]
    assert settings.mqtt_url == "mqtts://mosquitto:8883"
    assert settings.resolved_database_url().startswith("postgresql+psycopg://etp:")
    assert "@postgres:5432/etp" in settings.resolved_database_url()
    assert settings.http_host == "0.0.0.0"
    assert str(settings.data_dir) in [v.split(":")[1] for v in worker["volumes"]]


@pytest.mark.parametrize("name", ["migrate", "worker"])
def test_hub_services_run_real_etp_commands(name: str) -> None:
    check_etp_command(SERVICES[name]["command"])


def test_start_order_waits_on_health_and_migrations() -> None:
    worker, migrate = SERVICES["worker"]["depends_on"], SERVICES["migrate"]["depends_on"]
    assert worker["migrate"]["condition"] == "service_completed_successfully"
    assert worker["mosquitto"]["condition"] == "service_healthy"
    assert worker["postgres"]["condition"] == "service_healthy"
    assert migrate["postgres"]["condition"] == "service_healthy"
    for name in ("mosquitto", "postgres"):
        assert SERVICES[name]["healthcheck"]["test"], f"{name} has no healthcheck"
    assert SERVICES["migrate"]["restart"] == "no"
    assert int(SERVICES["worker"]["deploy"]["replicas"]) >= 2


def test_mosquitto_reads_the_files_etp_broker_config_writes() -> None:
    """Mosquitto runs the conf `etp broker config` writes in the container's broker config dir
    (from the same volume), and its health probe trusts the CA the hubs use."""
    worker = SERVICES["worker"]["environment"]
    mosquitto = SERVICES["mosquitto"]
    conf = Path(worker["ETP_BROKER_CONFIG_DIR"]) / "mosquitto.conf"
    assert mosquitto["command"][-1] == str(conf)
    mounts = {v.split(":")[0]: v.split(":")[1] for v in mosquitto["volumes"]}
    assert mounts["etp-data"] == worker["ETP_DATA_DIR"] and conf.is_relative_to(
        worker["ETP_DATA_DIR"]
    )
    probe = " ".join(mosquitto["healthcheck"]["test"][1:])
    assert f"--cafile {worker['ETP_MQTT_CA_FILE']}" in probe
    assert "-p 8883" in probe and "8883:8883" in mosquitto["ports"]


def test_compose_builds_from_the_dockerfile() -> None:
    build = SERVICES["worker"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert context == REPO and (context / build["dockerfile"]).is_file()


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _final_stage() -> list[tuple[str, str]]:
    steps = _dockerfile()
    start = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[start:]


def test_image_is_python_3_11_slim_and_runs_as_a_non_root_user() -> None:
    stage = _final_stage()
    assert stage[0][1].split()[0] == "python:3.11-slim"
    users = [args for op, args in stage if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    order = [op for op, _ in stage]
    assert order.index("USER") < order.index("ENTRYPOINT")


def test_image_entrypoint_and_command_are_real_etp_commands() -> None:
    stage = dict(_final_stage())
    assert json.loads(stage["ENTRYPOINT"]) == ["etp"]
    check_etp_command(json.loads(stage["CMD"]))


def test_image_sets_only_real_settings() -> None:
    for op, args in _dockerfile():
        if op != "ENV":
            continue
        for name in re.findall(r"(\w+)=", args):
            if name.startswith("ETP_"):
                assert name[4:].lower() in Settings.model_fields, name


def test_every_file_the_image_copies_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for op, args in _dockerfile():
        if op != "COPY" or args.startswith("--from"):
            continue
        *sources, _target = shlex.split(args)
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by dockerignore"


def test_image_healthcheck_runs_the_probe_it_copies() -> None:
    steps = _dockerfile()
    (check,) = [args for op, args in steps if op == "HEALTHCHECK"]
    command = json.loads(check.split("CMD", 1)[1])
    copies = {shlex.split(args)[-1]: shlex.split(args)[0] for op, args in steps if op == "COPY"}
    assert copies[command[-1]] == "deploy/healthcheck.py"


def _probe(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "healthcheck.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=REPO,
    )


def _hub_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETP_")}
    env.update(
        {
            "ETP_DATA_DIR": str(data_dir),
            "ETP_MQTT_PORT": str(free_port()),
            "ETP_HTTP_PORT": str(free_port()),
            "ETP_SETTLEMENT_NETWORK": "off",
            "ETP_AGGREGATORS": "1",
            "ETP_LOG_LEVEL": "warning",
            "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        }
    )
    env.update(extra)
    return env


def test_probe_reports_a_hub_that_is_not_there(tmp_path: Path) -> None:
    done = _probe(_hub_env(tmp_path))
    assert done.returncode == 1 and done.stdout.startswith("unhealthy:"), done.stdout


@pytest.mark.slow
def test_probe_finds_a_real_hub_ready_over_https(tmp_path: Path) -> None:
    """`etp hub` with the site certificates and ETP_TLS=on serves HTTPS on loopback: the probe
    picks the scheme by the hub's own rule and reports it ready; unhealthy once it stops."""
    from hub.security.pki import site_pki

    site_pki(tmp_path).init(["hub.test"], days=2, site="site1")
    env = _hub_env(tmp_path, ETP_TLS="on")
    log = (tmp_path / "hub.log").open("wb")
    hub = subprocess.Popen(
        [sys.executable, "-m", "hub.cli.main", "hub"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            done = _probe(env)
            if done.returncode == 0 or hub.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        hub_log = (tmp_path / "hub.log").read_text(errors="replace")[-2000:]
        assert done.returncode == 0, done.stdout + hub_log
        assert done.stdout.startswith(f"healthy: https://127.0.0.1:{env['ETP_HTTP_PORT']}/")
    finally:
        hub.terminate()
        hub.wait(timeout=30)
        log.close()
    done = _probe(env)
    assert done.returncode == 1 and "unhealthy" in done.stdout
