"""TLS on a real site: when the hub uses TLS (hub/security/tls.py), a hub whose embedded broker
serves the site certificate trades with real MicroPython boards over mqtts://, its gateway
serves HTTPS and wss:// with the site certificate, and a hub that would put plain text on the
network refuses to start with a message naming `etp pki init`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner
from websockets.asyncio.client import connect

from hub.cli.main import app
from hub.security.pki import site_pki
from hub.security.tls import (
    MQTTS_PORT,
    PlaintextRefusedError,
    TlsSetupError,
    is_loopback_host,
    plan_site_tls,
)
from hub.settings import Settings, load_master_secret
from hub.tools.firmware.fleet import FleetConfig, start_fleet
from hub.transport.broker import parse_mqtt_url
from hub.transport.mqtt import MqttClient, MqttError, tls_context
from tests.brokers import free_port
from tests.conftest import micropython_available
from tests.hub.helpers import api_key, hub_settings, running_hub, wait_for
from tests.hub.processes import REPO

runner = CliRunner()


def _settings(data_dir: Path, **values: Any) -> Settings:
    return Settings(data_dir=data_dir, **values)


def _with_pki(data_dir: Path, *hosts: str) -> Path:
    site_pki(data_dir).init(hosts)
    return data_dir / "pki"


# ---- the rule -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.20", False),
        ("hub.lan", False),
    ],
)
def test_only_loopback_addresses_count_as_this_machine_only(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_loopback_stays_plain_as_the_demo_needs_with_or_without_certificates(
    tmp_path: Path,
) -> None:
    plan = plan_site_tls(_settings(tmp_path / "fresh"))  # a fresh machine: no PKI
    assert plan.broker_tls is None and plan.link_url == "mqtt://127.0.0.1:1883"
    assert not plan.gateway_https and plan.warnings == ()
    _with_pki(tmp_path / "site")
    plan = plan_site_tls(_settings(tmp_path / "site"))
    assert plan.broker_tls is None and plan.link_url.startswith("mqtt://")


def test_a_network_bind_without_certificates_is_refused_naming_etp_pki_init(
    tmp_path: Path,
) -> None:
    with pytest.raises(PlaintextRefusedError, match=r"etp pki init --data-dir .*fresh") as broker:
        plan_site_tls(_settings(tmp_path / "fresh", mqtt_host="0.0.0.0"))
    assert "ETP_ALLOW_PLAINTEXT=true" in str(broker.value)
    assert "etp firmware flash --ca-file" in str(broker.value)
    with pytest.raises(PlaintextRefusedError, match=r"HTTP gateway binds 0\.0\.0\.0") as gateway:
        plan_site_tls(_settings(tmp_path / "fresh", http_host="0.0.0.0"))
    assert "ETP_GATEWAY_TLS_CERT" in str(gateway.value) and "etp pki init" in str(gateway.value)
    # a plain mqtt:// link to another machine's broker is plain text on the network too
    with pytest.raises(PlaintextRefusedError, match="use mqtts://"):
        plan_site_tls(_settings(tmp_path / "fresh", mqtt_url="mqtt://broker.lan:1883"))
    assert (
        plan_site_tls(_settings(tmp_path / "fresh", mqtt_url="mqtts://broker.lan")).link_url
        == "mqtts://broker.lan"
    )


def test_allow_plaintext_starts_with_a_warning_per_listener(tmp_path: Path) -> None:
    plan = plan_site_tls(
        _settings(tmp_path, mqtt_host="0.0.0.0", http_host="0.0.0.0", allow_plaintext=True)
    )
    assert plan.broker_tls is None and plan.link_url == "mqtt://0.0.0.0:1883"
    assert not plan.gateway_https
    assert len(plan.warnings) == 2 and all("plain" in w for w in plan.warnings)


def test_with_certificates_a_network_bind_serves_mqtts_on_8883_and_https(tmp_path: Path) -> None:
    pki_dir = _with_pki(tmp_path)
    plan = plan_site_tls(_settings(tmp_path, mqtt_host="0.0.0.0", http_host="0.0.0.0"))
    assert plan.broker_tls is not None and plan.broker_tls.cert == pki_dir / "broker.crt"
    assert plan.broker_port == MQTTS_PORT
    # the hub reaches its own broker on loopback, verifying the site CA
    assert plan.link_url == f"mqtts://127.0.0.1:{MQTTS_PORT}"
    assert plan.link_ca_file == pki_dir / "ca.crt"
    assert plan.gateway_cert == pki_dir / "gateway.crt"
    assert plan.gateway_key == pki_dir / "gateway.key"
    assert plan.warnings == ()
    # a port given explicitly is kept
    explicit = plan_site_tls(_settings(tmp_path, mqtt_host="0.0.0.0", mqtt_port=18883))
    assert explicit.broker_port == 18883 and explicit.link_url.endswith(":18883")


def test_a_broker_certificate_that_does_not_name_the_bind_address_is_refused(
    tmp_path: Path,
) -> None:
    _with_pki(tmp_path, "hub.lan")  # names hub.lan, localhost, 127.0.0.1
    with pytest.raises(TlsSetupError, match=r"does not name 10\.9\.8\.7.*--host 10\.9\.8\.7"):
        plan_site_tls(_settings(tmp_path, mqtt_host="10.9.8.7"))


def test_tls_on_without_certificates_is_an_error_even_with_allow_plaintext(
    tmp_path: Path,
) -> None:
    with pytest.raises(TlsSetupError, match="etp pki init"):
        plan_site_tls(_settings(tmp_path, tls="on", allow_plaintext=True))


def test_the_operators_certificate_wins_over_the_site_pki(tmp_path: Path) -> None:
    pki_dir = _with_pki(tmp_path)
    own_cert, own_key = tmp_path / "own.crt", tmp_path / "own.key"
    own_cert.write_bytes((pki_dir / "gateway.crt").read_bytes())
    own_key.write_bytes((pki_dir / "gateway.key").read_bytes())
    plan = plan_site_tls(_settings(tmp_path, gateway_tls_cert=own_cert, gateway_tls_key=own_key))
    assert plan.gateway_cert == own_cert and plan.gateway_key == own_key  # even on loopback
    with pytest.raises(TlsSetupError, match="both ETP_GATEWAY_TLS_CERT and ETP_GATEWAY_TLS_KEY"):
        plan_site_tls(_settings(tmp_path, gateway_tls_cert=own_cert))


def test_etp_hub_on_a_network_address_without_certificates_exits_with_the_fix(
    tmp_path: Path,
) -> None:
    # refused before anything binds: no socket is opened on the network address
    result = runner.invoke(app, ["hub", "--data-dir", str(tmp_path), "--mqtt-host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "error: the embedded MQTT broker binds 0.0.0.0" in result.output
    assert f"etp pki init --data-dir {tmp_path}" in result.output
    assert not (tmp_path / "etp.db").exists()  # nothing started


# ---- a TLS hub ------------------------------------------------------------------------------


def _tls_hub_settings(tmp_path: Path) -> Settings:
    """A hub with TLS on loopback (ETP_TLS=on): the same listeners a real site gets, without
    opening a port beyond this machine."""
    _with_pki(tmp_path)
    return hub_settings(tmp_path, tls="on", settlement_network="off")


@pytest.mark.slow
@pytest.mark.micropython
async def test_boards_trade_with_a_hub_whose_embedded_broker_serves_the_site_certificate(
    tmp_path: Path,
) -> None:
    if not micropython_available():
        pytest.skip("the MicroPython unix port is needed (scripts/setup.sh builds it)")
    settings = _tls_hub_settings(tmp_path)
    ca_file = tmp_path / "pki" / "ca.crt"
    async with running_hub(settings) as hub:
        assert hub.mqtt_url == f"mqtts://127.0.0.1:{settings.mqtt_port}"
        await wait_for(lambda: hub.ready, 20, "the hub linked to its broker over mqtts://")
        host, port = parse_mqtt_url(hub.mqtt_url)
        # the broker's port speaks TLS only
        plain = MqttClient(host, port, "etp-plain", lambda topic, payload: None)
        with pytest.raises(MqttError):
            await plain.connect()
        started = time.perf_counter()
        probe = MqttClient(
            host, port, "etp-probe", lambda topic, payload: None, tls=tls_context(str(ca_file))
        )
        await probe.connect()
        handshake_ms = (time.perf_counter() - started) * 1000
        await probe.disconnect()
        print(f"mqtts connect (TCP + TLS + CONNECT) to the embedded broker: {handshake_ms:.1f} ms")

        assert hub.registry is not None and hub.auctions is not None
        registry, auctions = hub.registry, hub.auctions
        fleet = await start_fleet(
            FleetConfig(
                count=2,
                mqtt_url=hub.mqtt_url,
                site=settings.site,
                master_secret=load_master_secret(settings.master_secret_path()),
                data_dir=tmp_path / "boards",
                ptys=False,
                heap="80K",
                overrides={"delivery_s": 3600, "mqtt_ca_file": str(ca_file)},
            )
        )
        try:
            try:
                await wait_for(lambda: len(registry.online()) == 2, 60, "two boards online")
                await wait_for(lambda: auctions.totals.trades >= 4, 60, "four trades")
            except AssertionError:
                logs = "\n".join(b.console_log.read_text()[-1500:] for b in fleet.devices)
                pytest.fail(f"no trading over the site's TLS; board consoles:\n{logs}")
            await auctions.stop()  # finish trades being confirmed while the boards still run
        finally:
            assert hub.registry is not None
            hub.registry.expect_departures = True
            await fleet.stop()


async def test_the_gateway_serves_https_and_wss_with_the_site_certificate(
    tmp_path: Path,
) -> None:
    settings = _tls_hub_settings(tmp_path)
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>ETP</title>")
    settings.dashboard_dir = dist
    trust = ssl.create_default_context(cafile=str(tmp_path / "pki" / "ca.crt"))
    async with running_hub(settings) as hub:
        assert hub.http_url == f"https://127.0.0.1:{settings.http_port}"
        key = await api_key(hub)
        async with httpx.AsyncClient(verify=trust, timeout=10) as client:
            live = await client.get(hub.http_url + "/health/live")
            assert live.status_code == 200
            status = await client.get(
                hub.http_url + "/api/v1/status", headers={"Authorization": f"Bearer {key}"}
            )
            assert status.status_code == 200 and status.json()["site"] == settings.site
            assert status.json()["mqtt"]["url"].startswith("mqtts://")
            page = await client.get(hub.http_url + "/")  # the dashboard may open wss://
            assert page.status_code == 200 and "ETP" in page.text
            assert "connect-src 'self' ws: wss:" in page.headers["content-security-policy"]
        # a client that does not trust the site CA is refused at the handshake
        async with httpx.AsyncClient(timeout=10) as stranger:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await stranger.get(hub.http_url + "/health/live")
        # plain HTTP to the HTTPS port gets no answer it could use
        async with httpx.AsyncClient(timeout=5) as plain:
            try:
                response = await plain.get(
                    hub.http_url.replace("https://", "http://") + "/health/live"
                )
            except httpx.HTTPError:
                pass  # the TLS layer drops it
            else:
                assert response.status_code != 200

        url = hub.http_url.replace("https://", "wss://") + "/ws"
        ws = await connect(
            url, ssl=trust, open_timeout=10, additional_headers={"Authorization": f"Bearer {key}"}
        )
        try:
            snapshot = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert snapshot["type"] == "snapshot" and snapshot["status"]["site"] == settings.site
        finally:
            await ws.close()


@pytest.mark.slow
def test_etp_hub_with_tls_tells_where_boards_and_browsers_reach_it(tmp_path: Path) -> None:
    """`etp hub` (a child process) on TLS prints mqtts:// and https:// addresses, the names
    in its certificates and the CA to flash onto boards; Ctrl-C (SIGINT) stops it."""
    _with_pki(tmp_path, "hub.site.test")
    mqtt_port, http_port = free_port(), free_port()
    env = {
        **os.environ,
        "ETP_DATA_DIR": str(tmp_path),
        "ETP_SETTLEMENT_NETWORK": "off",
        "ETP_LOG_LEVEL": "warning",
    }
    env.pop("ETP_DATABASE_URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub.cli.main",
            "hub",
            "--tls",
            "on",
            "--mqtt-port",
            str(mqtt_port),
            "--http-port",
            str(http_port),
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            line.startswith("dashboard:") for line in lines
        ):
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip())
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    output = "\n".join(lines)
    assert (
        f"ETP hub running: mqtt mqtts://127.0.0.1:{mqtt_port}, "
        f"http https://127.0.0.1:{http_port}" in output
    ), output
    ca = tmp_path / "pki" / "ca.crt"
    assert f"boards: mqtts://hub.site.test:{mqtt_port} (or localhost, 127.0.0.1)" in output
    assert f"etp firmware flash --ca-file {ca}" in output
    assert f"dashboard: https://hub.site.test:{http_port}" in output
    assert proc.returncode == 0
    rest = proc.stdout.read() if proc.stdout else ""
    for key in (tmp_path / "pki").glob("*.key"):  # no key material in anything it printed
        body = "".join(key.read_text().splitlines()[1:-1])
        assert body[10:40] not in (output + rest).replace("\n", "")
    assert "PRIVATE KEY" not in output + rest
