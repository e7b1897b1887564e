"""The systemd units of deploy/systemd: what `systemd-analyze verify` says about each (a typo
in a key or a value is a failure), their hardening exposure, and what each unit promises the
operator (user, environment file, ordering, restarts), plus the Mosquitto TLS copy script."""

from __future__ import annotations

import grp
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "deploy" / "systemd"
INSTALLED_ETP = "/opt/etp/venv/bin/etp"
INSTALLED_TLS_SCRIPT = "/opt/etp/bin/etp-mosquitto-tls"
SERVICES = ["etp-hub.service", "etp-hub-worker@.service", "etp-db-migrate.service"]
ALL_UNITS = sorted(p.name for p in SYSTEMD.iterdir() if p.is_file())

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def _etp_executable() -> str:
    """An existing executable standing in for /opt/etp/venv/bin/etp (verify checks it)."""
    beside = Path(sys.executable).parent / "etp"
    return str(beside if beside.exists() else Path(sys.executable))


def _staged(tmp_path: Path, names: list[str] | None = None, edit: dict[str, str] | None = None):
    """Copy units (and the mosquitto drop-in) to tmp_path with the installed paths pointing at
    executables that exist here; `edit` replaces text in every copied file."""
    out = tmp_path / "units"
    out.mkdir()
    replacements = {
        INSTALLED_ETP: _etp_executable(),
        INSTALLED_TLS_SCRIPT: str(REPO / "deploy" / "bin" / "etp-mosquitto-tls"),
        **(edit or {}),
    }
    for name in names or ALL_UNITS:
        text = (SYSTEMD / name).read_text()
        for old, new in replacements.items():
            text = text.replace(old, new)
        (out / name).write_text(text)
    return out


def _verify(paths: list[Path], unit_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:", "SYSTEMD_LOG_COLOR": "0"}
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, paths)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def _instances(unit_dir: Path) -> list[Path]:
    """Every unit as systemd would load it: the worker template as instance @1."""
    return [unit_dir / (name.replace("@.", "@1.") if "@." in name else name) for name in ALL_UNITS]


def _keys(name: str, section: str = "Service") -> dict[str, list[str]]:
    """The key = value lines of one section of a unit (repeated keys kept in order)."""
    keys: dict[str, list[str]] = {}
    current = None
    for raw in (SYSTEMD / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            continue
        if current == section:
            key, _, value = line.partition("=")
            keys.setdefault(key.strip(), []).append(value.strip())
    return keys


@needs_analyze
def test_every_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    units = _staged(tmp_path)
    done = _verify(_instances(units), units)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@needs_analyze
def test_the_mosquitto_drop_in_passes_verify_with_debian_s_unit(tmp_path: Path) -> None:
    """The drop-in is loaded with Debian's mosquitto.service (a copy of it here when the
    package is installed, else a unit with the same [Service] shape)."""
    units = _staged(tmp_path, names=[])
    debian = Path("/lib/systemd/system/mosquitto.service")
    text = (
        debian.read_text()
        if debian.exists()
        else (
            "[Unit]\nDescription=Mosquitto\n[Service]\nType=notify\n"
            f"ExecStart={_etp_executable()} -c /etc/mosquitto/mosquitto.conf\n"
        )
    )
    (units / "mosquitto.service").write_text(text)
    drop_in = units / "mosquitto.service.d"
    drop_in.mkdir()
    (drop_in / "etp.conf").write_text(
        (SYSTEMD / "mosquitto.service.d" / "etp.conf")
        .read_text()
        .replace(INSTALLED_TLS_SCRIPT, str(REPO / "deploy" / "bin" / "etp-mosquitto-tls"))
    )
    done = _verify([units / "mosquitto.service"], units)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    broken = (drop_in / "etp.conf").read_text().replace("ExecStartPre=", "ExecStartPr=")
    (drop_in / "etp.conf").write_text(broken)
    done = _verify([units / "mosquitto.service"], units)
    assert "ExecStartPr" in done.stderr, "verify no longer reads the drop-in"


@needs_analyze
@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ("Restart=on-failure", "Restart=on-failur", "on-failur"),
        ("KillSignal=SIGTERM", "KillSignl=SIGTERM", "KillSignl"),
        ("ProtectSystem=strict", "ProtectSystem=strictly", "strictly"),
    ],
)
def test_verify_catches_a_typo(tmp_path: Path, old: str, new: str, complaint: str) -> None:
    """The check above can fail: a misspelt key or value is reported."""
    units = _staged(tmp_path)
    hub = units / "etp-hub.service"
    hub.write_text(hub.read_text().replace(old, new))
    done = _verify([hub], units)
    assert complaint in done.stderr


@needs_analyze
def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    units = _staged(tmp_path, edit={_etp_executable(): "/nonexistent/etp"})
    done = _verify([units / "etp-hub-worker@2.service"], units)
    assert done.returncode != 0 and "/nonexistent/etp" in done.stderr


@needs_analyze
@pytest.mark.parametrize("name", ["etp-hub.service", "etp-hub-worker@.service"])
def test_hub_units_are_hardened(tmp_path: Path, name: str) -> None:
    """systemd's own exposure score stays at 2.5 or below (0 = locked down, 10 = exposed)."""
    units = _staged(tmp_path, names=[name])
    instance = units / name.replace("@.", "@1.")
    if instance.name != name:
        shutil.copy(units / name, instance)
    done = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            "--threshold=25",
            "--no-pager",
            str(instance),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-600:] + done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_services_run_as_etp_with_the_site_environment(name: str) -> None:
    service = _keys(name)
    assert service["User"] == ["etp"] and service["Group"] == ["etp"]
    assert service["EnvironmentFile"][0] == "/etc/etp/etp.env"
    assert service["ExecStart"][0].startswith(INSTALLED_ETP + " ")
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/etp",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "CapabilityBoundingSet": "",
    }.items():
        assert service[key] == [value], key


def test_long_running_units_restart_on_failure() -> None:
    for name in ("etp-hub.service", "etp-hub-worker@.service"):
        assert _keys(name)["Restart"] == ["on-failure"]
        assert _keys(name, "Install")["WantedBy"] == ["multi-user.target"]


def test_worker_runs_after_broker_database_and_migrations_on_its_own_port() -> None:
    service, unit = _keys("etp-hub-worker@.service"), _keys("etp-hub-worker@.service", "Unit")
    assert service["ExecStart"] == [f"{INSTALLED_ETP} hub --worker"]
    assert service["EnvironmentFile"] == ["/etc/etp/etp.env", "/etc/etp/worker-%i.env"]
    after = " ".join(unit["After"]).split()
    wants = " ".join(unit["Wants"]).split()
    for dependency in ("mosquitto.service", "postgresql.service"):
        assert dependency in after and dependency in wants
    assert "etp-db-migrate.service" in after and "etp-db-migrate.service" in wants
    # Requires= would restart every running worker when the migrations run again (upgrade)
    assert "Requires" not in unit and "BindsTo" not in unit


def test_migrations_run_once_before_the_hubs() -> None:
    service = _keys("etp-db-migrate.service")
    assert service["Type"] == ["oneshot"] and service["RemainAfterExit"] == ["yes"]
    assert service["ExecStart"] == [f"{INSTALLED_ETP} db upgrade"]
    assert "etp-db-migrate.service" in " ".join(_keys("etp-hub.service", "Unit")["After"])


def _pki_and_conf(tmp_path: Path) -> tuple[Path, Path]:
    """A real site PKI (`etp pki init`) and the mosquitto.conf `etp broker config --tls`
    writes from it."""
    from hub.security.broker import BrokerAccount, BrokerTlsFiles, write_mosquitto_config
    from hub.security.pki import site_pki

    data_dir = tmp_path / "data"
    site_pki(data_dir).init(["hub.test"], days=2, site="site1")
    conf_dir = tmp_path / "mosquitto-etp"
    write_mosquitto_config(
        conf_dir,
        [BrokerAccount("hub", "$7$101$c2FsdA==$aGFzaA==")],
        site="site1",
        listener_host="0.0.0.0",
        port=8883,
        tls=BrokerTlsFiles.in_data_dir(data_dir),
    )
    return data_dir / "pki", conf_dir


def test_mosquitto_gets_copies_of_the_broker_certificate(tmp_path: Path) -> None:
    """Mosquitto reads its key after dropping to its own user, so the script hands it copies
    of the etp user's 0600 files (group-readable for Mosquitto's group) and points the
    conf at them; a second run changes nothing."""
    pki_dir, conf_dir = _pki_and_conf(tmp_path)
    group = grp.getgrgid(os.getegid()).gr_name
    script = REPO / "deploy" / "bin" / "etp-mosquitto-tls"
    env = {**os.environ, "MOSQUITTO_GROUP": group}
    for _ in range(2):
        done = subprocess.run(
            [str(script), str(pki_dir), str(conf_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        conf = (conf_dir / "mosquitto.conf").read_text().splitlines()
        tls_dir = conf_dir / "tls"
        assert f"cafile {tls_dir}/ca.crt" in conf
        assert f"certfile {tls_dir}/broker.crt" in conf
        assert f"keyfile {tls_dir}/broker.key" in conf
    for name in ("ca.crt", "broker.crt", "broker.key"):
        copy = tls_dir / name
        assert copy.read_bytes() == (pki_dir / name).read_bytes()
        assert stat.S_IMODE(copy.stat().st_mode) == 0o640
    assert stat.S_IMODE(tls_dir.stat().st_mode) == 0o750
    assert (conf_dir / "mosquitto.conf").read_text().count("keyfile") == 1


def test_mosquitto_tls_script_refuses_without_certificates(tmp_path: Path) -> None:
    pki_dir, conf_dir = _pki_and_conf(tmp_path)
    (pki_dir / "broker.key").unlink()
    done = subprocess.run(
        [str(REPO / "deploy" / "bin" / "etp-mosquitto-tls"), str(pki_dir), str(conf_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 1 and "etp pki init" in done.stderr
