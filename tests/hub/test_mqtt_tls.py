"""The hub's MQTT client over TLS with a user name and password, against a real Mosquitto that
refuses anonymous clients; and the settings that configure it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from hub.settings import Settings
from hub.transport.broker import BrokerError, is_tls_url, parse_mqtt_url
from hub.transport.link import LinkConfig, LinkConfigError
from hub.transport.mqtt import (
    MqttClient,
    MqttConnectRefusedError,
    MqttError,
    MqttTlsError,
    tls_context,
)
from tests.brokers import (
    SecureBroker,
    make_self_signed_cert,
    mosquitto_available,
    mosquitto_secure_broker,
)

USERS = {"hub": "hub-secret-1", "battery": "battery-secret-2"}


@pytest.fixture
async def secure_broker() -> AsyncIterator[SecureBroker]:
    if not mosquitto_available() or shutil.which("openssl") is None:
        pytest.skip("mosquitto and openssl are needed")
    async with mosquitto_secure_broker(USERS) as broker:
        yield broker


def _client(
    broker: SecureBroker,
    *,
    host: str = "127.0.0.1",
    ca_file: Path | None = None,
    username: str | None = "hub",
    password: str | None = USERS["hub"],
    received: list[tuple[str, bytes]] | None = None,
) -> MqttClient:
    """A client for the broker's TLS port, trusting `ca_file` (default: the broker's CA)."""
    _, port = parse_mqtt_url(broker.url)
    sink = received if received is not None else []
    return MqttClient(
        host, port, "etp-test", lambda topic, payload: sink.append((topic, payload)),
        tls=tls_context(str(ca_file or broker.ca_file)), username=username, password=password,
    )


@pytest.mark.mosquitto
async def test_client_logs_in_over_tls_and_messages_flow(secure_broker: SecureBroker) -> None:
    received: list[tuple[str, bytes]] = []
    client = _client(secure_broker, received=received)
    await client.connect()
    try:
        await client.subscribe([("etp/test/#", 1)])
        await client.publish_wait("etp/test/a", b"over tls", qos=1)
        for _ in range(500):
            if received:
                break
            await asyncio.sleep(0.01)
        assert received == [("etp/test/a", b"over tls")]
    finally:
        await client.disconnect()


@pytest.mark.mosquitto
async def test_plain_mqtt_to_the_tls_port_says_to_use_mqtts(secure_broker: SecureBroker) -> None:
    _, port = parse_mqtt_url(secure_broker.url)
    client = MqttClient("127.0.0.1", port, "etp-test", lambda topic, payload: None,
                        username="hub", password=USERS["hub"])
    with pytest.raises(MqttError, match="use mqtts://"):
        await client.connect()


@pytest.mark.mosquitto
async def test_broker_certificate_from_another_ca_is_a_clear_tls_error(
    secure_broker: SecureBroker, tmp_path: Path
) -> None:
    other_ca, _ = make_self_signed_cert(tmp_path / "other")
    client = _client(secure_broker, ca_file=other_ca)
    with pytest.raises(MqttTlsError, match=r"127\.0\.0\.1:\d+ is not trusted: self.signed"):
        await client.connect()
    assert not client.connected


@pytest.mark.mosquitto
async def test_host_name_must_be_one_the_certificate_names(secure_broker: SecureBroker) -> None:
    # The certificate names 127.0.0.1 only: reaching the same broker as "localhost" is refused.
    client = _client(secure_broker, host="localhost")
    with pytest.raises(MqttTlsError, match="not valid for 'localhost'"):
        await client.connect()


@pytest.mark.mosquitto
@pytest.mark.parametrize("username", ["hub", None])
async def test_wrong_or_missing_password_is_refused_without_showing_it(
    secure_broker: SecureBroker, username: str | None
) -> None:
    client = _client(secure_broker, username=username,
                     password="wrong-secret" if username else None)
    with pytest.raises(MqttConnectRefusedError) as refused:
        await client.connect()
    assert refused.value.code in (4, 5)
    assert "refused the connection" in str(refused.value)
    assert "wrong-secret" not in str(refused.value)


@pytest.mark.mosquitto
async def test_broker_requiring_a_client_certificate_admits_only_a_client_with_one() -> None:
    if not mosquitto_available() or shutil.which("openssl") is None:
        pytest.skip("mosquitto and openssl are needed")
    async with mosquitto_secure_broker(USERS, require_client_cert=True) as broker:
        assert broker.client_cert is not None and broker.client_key is not None
        without = _client(broker)
        with pytest.raises(MqttTlsError, match="certificate"):  # alert or reset: both say so
            await without.connect()
        _, port = parse_mqtt_url(broker.url)
        config = LinkConfig(url=broker.url, ca_file=broker.ca_file,
                            cert_file=broker.client_cert, key_file=broker.client_key)
        with_cert = MqttClient("127.0.0.1", port, "etp-test", lambda topic, payload: None,
                               tls=config.tls(), username="hub", password=USERS["hub"])
        await with_cert.connect()
        assert with_cert.connected
        await with_cert.disconnect()


def test_tls_files_that_cannot_be_loaded_name_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(LinkConfigError, match="--mqtt-ca-file") as no_ca:
        LinkConfig(url="mqtts://broker.example", ca_file=missing).tls()
    assert str(missing) in str(no_ca.value)
    not_pem = tmp_path / "garbage.pem"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(LinkConfigError, match="--mqtt-cert-file"):
        LinkConfig(url="mqtts://broker.example", cert_file=not_pem).tls()
    with pytest.raises(LinkConfigError, match="not mqtts://"):
        LinkConfig(url="mqtt://broker.example", ca_file=missing).tls()


def test_mqtts_urls_default_to_port_8883() -> None:
    assert parse_mqtt_url("mqtts://broker.example") == ("broker.example", 8883)
    assert parse_mqtt_url("mqtts://broker.example:9883") == ("broker.example", 9883)
    assert parse_mqtt_url("mqtt://broker.example") == ("broker.example", 1883)
    assert is_tls_url("mqtts://b") and not is_tls_url("mqtt://b")
    with pytest.raises(BrokerError) as bad:
        parse_mqtt_url("http://user:hunter2@broker.example")
    assert "hunter2" not in str(bad.value)


def test_credentials_in_the_url_leave_it_and_the_password_is_never_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ETP_MQTT_URL", "mqtts://hub:s3cr%40t@broker.example:8883")
    settings = Settings()
    assert settings.resolved_mqtt_url() == "mqtts://broker.example:8883"
    assert settings.mqtt_username == "hub"
    assert settings.mqtt_password is not None
    assert settings.mqtt_password.get_secret_value() == "s3cr@t"
    assert "s3cr" not in repr(settings) and "s3cr" not in str(settings.model_dump())
    # explicit settings win over what the URL says
    explicit = Settings(mqtt_username="other", mqtt_password=SecretStr("pw2"))
    assert explicit.mqtt_username == "other"
    assert explicit.mqtt_password is not None
    assert explicit.mqtt_password.get_secret_value() == "pw2"
