"""`etp pki init|show`: a site CA and the broker, gateway and hub certificates that chain to it,
name the site's hosts, keep their keys private, are not overwritten by accident; and a real
Mosquitto serving the broker certificate admits a client that trusts only the site CA."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import shutil
import ssl
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from typer.testing import CliRunner

from hub.cli.main import app
from hub.security.pki import (
    PkiExistsError,
    SitePki,
    certificate_names,
    default_hosts,
    site_pki,
)
from hub.transport.mqtt import MqttClient, MqttError, tls_context
from tests.brokers import MOSQUITTO_BIN, _stop, free_port, mosquitto_available, wait_listening

runner = CliRunner()


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_certificates_that_chain_to_the_site_ca_with_the_hosts_named(
    tmp_path: Path,
) -> None:
    pki = site_pki(tmp_path)
    assert not pki.exists() and pki.broker is None and pki.gateway is None and pki.hub is None
    pki.init(["hub.site.example", "10.20.30.40", "fd00::7"], days=90, site="north")
    assert pki.exists()
    ca = _cert(pki.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert ca.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    assert "north" in ca.subject.rfc4514_string()
    for files, usage in (
        (pki.broker, ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.gateway, ExtendedKeyUsageOID.SERVER_AUTH),
        (pki.hub, ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        assert files is not None and files.ca_cert == pki.ca_cert
        cert = _cert(files.cert)
        cert.verify_directly_issued_by(ca)  # signed by the site CA (ECDSA-SHA256)
        assert cert.signature_hash_algorithm is not None
        assert cert.signature_hash_algorithm.name == "sha256"
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [usage]
        lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
        assert dt.timedelta(days=89) < lifetime < dt.timedelta(days=91)
        # OpenSSL agrees the chain is good for that purpose
        purpose = "sslserver" if usage == ExtendedKeyUsageOID.SERVER_AUTH else "sslclient"
        if shutil.which("openssl"):
            verified = subprocess.run(
                [
                    "openssl",
                    "verify",
                    "-purpose",
                    purpose,
                    "-CAfile",
                    str(pki.ca_cert),
                    str(files.cert),
                ],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert verified.returncode == 0, verified.stderr
    assert pki.broker is not None and pki.gateway is not None and pki.hub is not None
    wanted = {"hub.site.example", "10.20.30.40", "fd00::7", "localhost", "127.0.0.1"}
    assert set(certificate_names(pki.broker.cert)) == wanted
    assert set(certificate_names(pki.gateway.cert)) == wanted
    assert certificate_names(pki.hub.cert) == []
    assert "CN=hub" in _cert(pki.hub.cert).subject.rfc4514_string()  # Mosquitto's identity

    assert _mode(pki.directory) == 0o700
    for key in (pki.ca_key, pki.broker.key, pki.gateway.key, pki.hub.key):
        assert _mode(key) == 0o600, key
    for cert_path in (pki.ca_cert, pki.broker.cert):
        assert _mode(cert_path) == 0o644


def test_default_names_are_this_machine_and_loopback() -> None:
    names = default_hosts()
    assert {"localhost", "127.0.0.1"} <= set(names)
    import socket

    assert socket.gethostname().lower() in names
    assert "0.0.0.0" not in names and len(names) == len(set(names))


def test_init_refuses_to_overwrite_force_renews_with_the_same_ca_and_new_ca_replaces_it(
    tmp_path: Path,
) -> None:
    pki = site_pki(tmp_path)
    pki.init(["a.example"])
    assert pki.broker is not None
    ca_before, broker_before = pki.ca_cert.read_bytes(), pki.broker.cert.read_bytes()
    key_before = pki.broker.key.read_bytes()
    with pytest.raises(PkiExistsError, match="--force"):
        pki.init(["b.example"])
    assert pki.broker.cert.read_bytes() == broker_before  # untouched

    pki.init(["b.example"], force=True)
    assert pki.ca_cert.read_bytes() == ca_before  # boards keep their ca.crt
    assert pki.broker.key.read_bytes() != key_before
    assert "b.example" in certificate_names(pki.broker.cert)
    _cert(pki.broker.cert).verify_directly_issued_by(_cert(pki.ca_cert))

    pki.init(["b.example"], force=True, new_ca=True)
    assert pki.ca_cert.read_bytes() != ca_before
    _cert(pki.broker.cert).verify_directly_issued_by(_cert(pki.ca_cert))
    assert _mode(pki.ca_key) == 0o600


def test_cli_init_and_show_print_names_expiry_and_fingerprints_never_a_key(
    tmp_path: Path,
) -> None:
    made = runner.invoke(
        app, ["pki", "init", "--data-dir", str(tmp_path), "--host", "hub.lan", "--days", "20"]
    )
    assert made.exit_code == 0, made.output
    assert "ca.crt" in made.output and "--ca-file" in made.output
    again = runner.invoke(app, ["pki", "init", "--data-dir", str(tmp_path)])
    assert again.exit_code == 1 and "--force" in again.output
    careless = runner.invoke(app, ["pki", "init", "--data-dir", str(tmp_path), "--new-ca"])
    assert careless.exit_code == 1 and "give --force with it" in careless.output

    shown = runner.invoke(app, ["pki", "show", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    for role in ("ca:", "broker:", "gateway:", "hub:"):
        assert role in shown.output
    assert "hub.lan, localhost, 127.0.0.1" in shown.output
    fingerprint = _cert(tmp_path / "pki" / "ca.crt").fingerprint(
        __import__("cryptography.hazmat.primitives.hashes", fromlist=["SHA256"]).SHA256()
    )
    assert fingerprint.hex(":").upper() in shown.output
    # 20-day server certificates: each warned about (the 10-year CA is not)
    assert shown.output.count("expires in 19 days") == 3, shown.output
    assert "renew with `etp pki init --force`" in shown.output
    for output in (made.output, shown.output):
        assert "PRIVATE KEY" not in output
        for key in (tmp_path / "pki").glob("*.key"):
            body = "".join(key.read_text().splitlines()[1:-1])
            assert body[:24] not in output.replace("\n", "")

    empty = runner.invoke(app, ["pki", "show", "--data-dir", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "etp pki init" in empty.output


def test_bad_host_names_are_refused(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["pki", "init", "--data-dir", str(tmp_path), "--host", "not a name"]
    )
    assert result.exit_code == 1 and "neither a DNS name nor an IP address" in result.output
    assert not (tmp_path / "pki" / "ca.key").exists()


@contextlib.asynccontextmanager
async def _mosquitto_with_site_certificate(pki: SitePki, extra: str = "") -> AsyncIterator[int]:
    """Mosquitto with one TLS listener serving the PKI's broker certificate; yields its port.
    Mosquitto started as root runs as its own user: it gets a copy of the files it can read
    (an operator `chown mosquitto`s them instead: docs/security-tls.md)."""
    if not mosquitto_available():
        pytest.skip("mosquitto is needed")
    assert pki.broker is not None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="etp-mosq-pki-") as tmp:
        served = Path(tmp)
        served.chmod(0o755)
        cert, key, ca = served / "broker.crt", served / "broker.key", served / "ca.crt"
        shutil.copy(pki.broker.cert, cert)
        shutil.copy(pki.broker.key, key)
        shutil.copy(pki.ca_cert, ca)
        key.chmod(0o644)
        conf = served / "mosquitto.conf"
        conf.write_text(
            f"per_listener_settings false\npersistence false\nlog_dest none\n"
            f"listener {port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
            f"tls_version tlsv1.2\n{extra.format(ca=ca)}"
        )
        binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
        assert binary is not None
        proc = subprocess.Popen(
            [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            await wait_listening(port)
            yield port
        finally:
            _stop(proc)


@pytest.mark.mosquitto
async def test_mosquitto_with_the_pki_broker_certificate_admits_mqtts_and_refuses_plain(
    tmp_path: Path,
) -> None:
    pki = site_pki(tmp_path)
    pki.init(["broker.test"])
    async with _mosquitto_with_site_certificate(pki, "allow_anonymous true\n") as port:
        received: list[tuple[str, bytes]] = []
        client = MqttClient(
            "127.0.0.1",
            port,
            "etp-pki-test",
            lambda topic, payload: received.append((topic, payload)),
            tls=tls_context(str(pki.ca_cert)),  # trusts the site CA only
        )
        await client.connect()
        try:
            await client.subscribe([("etp/pki/#", 1)])
            await client.publish_wait("etp/pki/a", b"over the site's TLS", qos=1)
            for _ in range(500):
                if received:
                    break
                await asyncio.sleep(0.01)
            assert received == [("etp/pki/a", b"over the site's TLS")]
        finally:
            await client.disconnect()
        # the same port refuses a plain MQTT client
        plain = MqttClient("127.0.0.1", port, "etp-plain", lambda topic, payload: None)
        with pytest.raises(MqttError, match="use mqtts://"):
            await plain.connect()
        # and a client that trusts only the system's CAs does not trust the site
        stranger = MqttClient(
            "127.0.0.1",
            port,
            "etp-stranger",
            lambda topic, payload: None,
            tls=ssl.create_default_context(),
        )
        with pytest.raises(MqttError, match="not trusted"):
            await stranger.connect()


@pytest.mark.mosquitto
async def test_a_mosquitto_requiring_client_certificates_admits_the_hub_by_its_certificate(
    tmp_path: Path,
) -> None:
    """Mosquitto's `require_certificate` + `use_identity_as_username`: the hub logs in with
    hub.crt (CN hub, no password); a client without a certificate is turned away."""
    pki = site_pki(tmp_path)
    pki.init()
    assert pki.hub is not None
    extra = (
        "allow_anonymous false\ncafile {ca}\nrequire_certificate true\n"
        "use_identity_as_username true\n"
    )
    async with _mosquitto_with_site_certificate(pki, extra) as port:
        hub = MqttClient(
            "localhost",
            port,
            "etp-hub-cert",
            lambda topic, payload: None,
            tls=tls_context(str(pki.ca_cert), str(pki.hub.cert), str(pki.hub.key)),
        )
        await hub.connect()
        assert hub.connected
        await hub.disconnect()
        anonymous = MqttClient(
            "localhost",
            port,
            "etp-no-cert",
            lambda topic, payload: None,
            tls=tls_context(str(pki.ca_cert)),
        )
        with pytest.raises(MqttError):
            await anonymous.connect()
        assert not anonymous.connected
