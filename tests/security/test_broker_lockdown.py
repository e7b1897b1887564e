"""The locked broker, on a real Mosquitto run with the generated files and on the embedded
amqtt broker (its child process, as the hub runs it) with the hub's plugins.

Each test runs against both: anonymous clients are refused, a battery can use only its own
topics (it cannot speak for another battery, send requests or market notices, or read other
batteries' traffic), the hub can do everything, a removed account cannot log in again within
a few seconds of the reload, and an oversized message is not passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hub.security.accounts import (
    HUB_USERNAME,
    BrokerAccount,
    device_username,
    hash_password,
    new_password,
)
from hub.security.broker import (
    ACL_FILE,
    PASSWORD_FILE,
    BrokerTlsFiles,
    EmbeddedLock,
    write_mosquitto_config,
)
from hub.transport.broker import EmbeddedBroker
from hub.transport.mqtt import MqttClient, MqttConnectRefusedError, MqttError, Will, tls_context
from shared_etp import topics
from tests.brokers import MOSQUITTO_BIN, free_port, mosquitto_available, wait_listening

SITE = "site1"
MAX_MESSAGE_BYTES = 2048
OWN, OTHER = 7, 8
BROKERS = [
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed"),
    ),
    "amqtt",
]


def _accounts(passwords: dict[str, str]) -> list[BrokerAccount]:
    return [
        BrokerAccount(
            name,
            hash_password(password),
            None if name == HUB_USERNAME else int(name.removeprefix("bess-")),
        )
        for name, password in passwords.items()
    ]


@dataclass
class Site:
    """A running locked broker and the passwords of its accounts."""

    kind: str
    port: int
    directory: Path
    passwords: dict[str, str]
    reload: Callable[[], None]
    clients: list[MqttClient] = field(default_factory=list)

    def write(self) -> None:
        """Write the access files for the current `passwords` (world-readable: a Mosquitto
        started as root reads them as user mosquitto)."""
        write_mosquitto_config(
            self.directory,
            _accounts(self.passwords),
            site=SITE,
            port=self.port,
            max_message_bytes=MAX_MESSAGE_BYTES,
            file_mode=0o644,
        )

    async def client(
        self,
        username: str | None,
        received: list[tuple[str, bytes]] | None = None,
        *,
        password: str | None = None,
        will: Will | None = None,
    ) -> MqttClient:
        """A connected client logged in as `username` (its own password unless given)."""
        inbox = received if received is not None else []
        client = MqttClient(
            "127.0.0.1",
            self.port,
            f"{username or 'anon'}-{len(self.clients)}",
            lambda topic, payload: inbox.append((topic, payload)),
            will=will,
            username=username,
            password=password if password is not None else self.passwords.get(username or ""),
        )
        await client.connect()
        self.clients.append(client)
        return client


@contextlib.asynccontextmanager
async def _mosquitto(site: Site) -> AsyncIterator[None]:
    site.write()
    process = subprocess.Popen(
        [MOSQUITTO_BIN, "-c", str(site.directory / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    site.reload = lambda: process.send_signal(signal.SIGHUP)
    try:
        try:
            await wait_listening(site.port)
        except Exception:
            process.kill()
            raise AssertionError(process.communicate(timeout=5)[1].decode(errors="replace"))
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


@contextlib.asynccontextmanager
async def _amqtt(site: Site) -> AsyncIterator[None]:
    site.write()
    lock = EmbeddedLock(site.directory / PASSWORD_FILE, site.directory / ACL_FILE)
    broker = EmbeddedBroker("127.0.0.1", site.port, lock=lock, max_message_bytes=MAX_MESSAGE_BYTES)
    site.reload = lambda: None  # the plugins notice the changed files themselves
    await broker.start(timeout_s=60)
    try:
        await wait_listening(site.port)
        yield
    finally:
        await broker.stop()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temporary directory Mosquitto can read after dropping root (pytest's tmp_path is
    under a 0700 directory)."""
    with tempfile.TemporaryDirectory(prefix="etp-lockdown-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


@pytest.fixture(params=BROKERS)
async def site(request: pytest.FixtureRequest, shared_dir: Path) -> AsyncIterator[Site]:
    """A locked broker (Mosquitto or the embedded amqtt) with accounts hub, bess-7, bess-8."""
    passwords = {
        HUB_USERNAME: new_password(),
        device_username(OWN): new_password(),
        device_username(OTHER): new_password(),
    }
    site = Site(request.param, free_port(), shared_dir / "broker", passwords, lambda: None)
    start = _mosquitto if request.param == "mosquitto" else _amqtt
    async with start(site):
        try:
            yield site
        finally:
            for client in site.clients:
                client.abort()


def _device(device_id: int, leaf: str) -> str:
    return topics.device_topic(SITE, device_id, leaf)


async def _hub(site: Site, received: list[tuple[str, bytes]]) -> MqttClient:
    """The hub, watching every battery's topics as the runtime does."""
    hub = await site.client(HUB_USERNAME, received)
    await hub.subscribe(
        [(topics.device_wildcard(SITE, leaf), 1) for leaf in topics.LEAVES]
        + [(f"etp/v1/{SITE}/market/#", 1)]
    )
    return hub


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_anonymous_and_wrong_password_refused(site: Site) -> None:
    with pytest.raises(MqttConnectRefusedError):
        await site.client(None)
    with pytest.raises(MqttConnectRefusedError):
        await site.client(device_username(OWN), password="not-the-password")
    with pytest.raises(MqttConnectRefusedError):
        await site.client("bess-99", password="anything")


@pytest.mark.parametrize("clean_session", [True, False])
async def test_refused_login_cannot_take_over_a_client_id(site: Site, clean_session: bool) -> None:
    """A CONNECT with a wrong password and the hub's client id must leave the hub's session
    alone (amqtt 0.12.1 dropped or rewrote that session before authenticating)."""
    at_hub: list[tuple[str, bytes]] = []
    hub = await _hub(site, at_hub)
    intruder = MqttClient(
        "127.0.0.1",
        site.port,
        hub.client_id,
        lambda t, p: None,
        clean_session=clean_session,
        username=HUB_USERNAME,
        password="guess",
    )
    with pytest.raises(MqttConnectRefusedError):
        await intruder.connect()
    battery = await site.client(device_username(OWN))
    await battery.publish_wait(_device(OWN, topics.STATUS), b"still-heard", qos=1)
    await _until(lambda: (_device(OWN, topics.STATUS), b"still-heard") in at_hub)
    assert hub.connected


async def test_battery_cannot_take_over_the_hubs_client_id(site: Site) -> None:
    """bess-7 logging in with the hub's client id must not cut the hub off: Mosquitto gives
    every login its user name as client id, the embedded broker refuses such a CONNECT."""
    at_hub: list[tuple[str, bytes]] = []
    hub = await _hub(site, at_hub)
    user = device_username(OWN)
    impostor = MqttClient(
        "127.0.0.1",
        site.port,
        hub.client_id,
        lambda t, p: None,
        username=user,
        password=site.passwords[user],
    )
    try:
        await impostor.connect()
    except MqttConnectRefusedError:
        assert site.kind == "amqtt"
    else:
        assert site.kind == "mosquitto"
        site.clients.append(impostor)
    other = await site.client(device_username(OTHER))
    await other.publish_wait(_device(OTHER, topics.STATUS), b"still-heard", qos=1)
    await _until(lambda: (_device(OTHER, topics.STATUS), b"still-heard") in at_hub)
    assert hub.connected


async def test_persistent_session_resumes_after_login(site: Site) -> None:
    """A battery keeping its session (clean session off) finds its subscription again when it
    logs in anew (the embedded broker reads such a CONNECT twice: check, then amqtt)."""
    hub = await _hub(site, [])
    seen: list[tuple[str, bytes]] = []
    user = device_username(OWN)

    def board() -> MqttClient:
        return MqttClient(
            "127.0.0.1",
            site.port,
            "board-7",
            lambda t, p: seen.append((t, p)),
            clean_session=False,
            username=user,
            password=site.passwords[user],
        )

    first = board()
    await first.connect()
    await first.subscribe([(_device(OWN, topics.REQUEST), 1)])
    await first.disconnect()
    again = board()
    await again.connect()
    site.clients.append(again)
    await hub.publish_wait(_device(OWN, topics.REQUEST), b"resumed", qos=1)
    await _until(lambda: (_device(OWN, topics.REQUEST), b"resumed") in seen)


async def test_battery_cannot_speak_for_another_or_send_requests(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    at_other: list[tuple[str, bytes]] = []
    await _hub(site, at_hub)
    other = await site.client(device_username(OTHER), at_other)
    await other.subscribe([(_device(OTHER, topics.REQUEST), 1), (f"etp/v1/{SITE}/market/#", 1)])
    battery = await site.client(device_username(OWN))
    forged = [
        _device(OTHER, topics.STATUS),
        _device(OTHER, topics.BIRTH),
        _device(OTHER, topics.REQUEST),
        _device(OWN, topics.REQUEST),
        topics.market_topic(SITE, topics.CLEARING),
        topics.market_topic(SITE, topics.HUB_STATE),
        f"etp/v1/{SITE}/elsewhere",
    ]
    for topic in forged:
        await battery.publish_wait(topic, b"forged", qos=1)
    await battery.publish_wait(_device(OWN, topics.STATUS), b"marker", qos=1)
    await _until(lambda: (_device(OWN, topics.STATUS), b"marker") in at_hub)
    assert [t for t, p in at_hub if p == b"forged"] == []
    assert at_other == []
    assert battery.connected


async def test_battery_cannot_read_others(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    seen: list[tuple[str, bytes]] = []
    hub = await _hub(site, at_hub)
    other = await site.client(device_username(OTHER))
    await other.publish_wait(_device(OTHER, topics.BIRTH), b"retained", qos=1, retain=True)
    battery = await site.client(device_username(OWN), seen)
    refused = []
    for wide in ("#", f"etp/v1/{SITE}/#", f"etp/v1/{SITE}/bess/+/status", _device(OTHER, "req")):
        try:
            await battery.subscribe([(wide, 0)])
        except MqttError:
            refused.append(wide)
    # amqtt refuses these subscriptions (SUBACK 0x80); Mosquitto 2.0.11 grants them but
    # checks its ACL before delivering each message: either way nothing arrives below.
    assert len(refused) == (0 if site.kind == "mosquitto" else 4)
    await battery.subscribe([(_device(OWN, topics.REQUEST), 1)])
    await other.publish_wait(_device(OTHER, topics.STATUS), b"eight", qos=1)
    await hub.publish_wait(_device(OTHER, topics.REQUEST), b"to-eight", qos=1)
    await hub.publish_wait(_device(OWN, topics.REQUEST), b"to-seven", qos=1)
    await _until(lambda: (_device(OWN, topics.REQUEST), b"to-seven") in seen)
    await _until(lambda: (_device(OTHER, topics.STATUS), b"eight") in at_hub)
    assert seen == [(_device(OWN, topics.REQUEST), b"to-seven")]


async def test_battery_uses_its_own_topics_and_the_hub_everything(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    seen: list[tuple[str, bytes]] = []
    hub = await _hub(site, at_hub)
    await hub.subscribe([("#", 0)])  # the hub account alone may read everything
    own_will = Will(_device(OWN, topics.DEATH), b"gone", 1, False)
    battery = await site.client(device_username(OWN), seen, will=own_will)
    await battery.subscribe([(_device(OWN, topics.REQUEST), 1), (f"etp/v1/{SITE}/market/#", 1)])
    for leaf in (topics.BIRTH, topics.STATUS, topics.RESPONSE, topics.DEATH):
        await battery.publish_wait(_device(OWN, leaf), leaf.encode(), qos=1)
    await hub.publish_wait(_device(OWN, topics.REQUEST), b"query", qos=1)
    await hub.publish_wait(topics.market_topic(SITE, topics.CLEARING), b"prices", qos=1)
    await _until(lambda: len(seen) == 2)
    assert sorted(seen) == sorted(
        [
            (_device(OWN, topics.REQUEST), b"query"),
            (topics.market_topic(SITE, topics.CLEARING), b"prices"),
        ]
    )
    await _until(lambda: len(at_hub) >= 6)
    assert {t for t, _ in at_hub} >= {
        _device(OWN, leaf) for leaf in (topics.BIRTH, topics.STATUS, topics.RESPONSE)
    }
    battery.abort()  # no DISCONNECT: the broker publishes the last will on its death topic
    await _until(lambda: (_device(OWN, topics.DEATH), b"gone") in at_hub)


async def test_last_will_on_another_battery_not_published(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    await _hub(site, at_hub)
    forged_will = Will(_device(OTHER, topics.DEATH), b"forged", 1, False)
    try:
        battery = await site.client(device_username(OWN), will=forged_will)
    except MqttConnectRefusedError:
        # amqtt publishes wills without asking the topic plugins: the auth plugin refuses
        # such a CONNECT.
        assert site.kind == "amqtt"
    else:
        # Mosquitto 2.0.11 accepts the CONNECT and checks the will against the ACL when it
        # would publish it: it is dropped.
        assert site.kind == "mosquitto"
        battery.abort()
    marker = await site.client(device_username(OWN))
    await marker.publish_wait(_device(OWN, topics.STATUS), b"marker", qos=1)
    await _until(lambda: (_device(OWN, topics.STATUS), b"marker") in at_hub)
    await asyncio.sleep(0.3)
    assert [p for _, p in at_hub if p == b"forged"] == []


async def test_oversized_message_not_passed_on(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    await _hub(site, at_hub)
    battery = await site.client(device_username(OWN))
    battery.publish(_device(OWN, topics.STATUS), b"x" * (MAX_MESSAGE_BYTES + 1), qos=0)
    await battery.publish_wait(_device(OWN, topics.STATUS), b"x" * MAX_MESSAGE_BYTES, qos=1)
    await _until(lambda: len(at_hub) == 1)
    await asyncio.sleep(0.2)
    assert [len(p) for _, p in at_hub] == [MAX_MESSAGE_BYTES]
    assert battery.connected  # a message over the payload limit is dropped, no more
    # A packet far over the limit closes the sender's connection before it is buffered.
    battery.publish(_device(OWN, topics.STATUS), b"x" * (MAX_MESSAGE_BYTES * 64), qos=0)
    await _until(lambda: not battery.connected, timeout_s=5)
    assert len(at_hub) == 1


def _remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


async def _connect_answer(port: int, packet: bytes) -> bytes:
    """Send raw bytes as a client; what the broker answers before it closes (5 s at most)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet)
    answer = b""
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # until EOF: closed by the broker
    writer.close()
    return answer


@pytest.mark.parametrize("announced", ["1 MB", "20 kB client id"])
async def test_oversized_connect_closes_the_connection(site: Site, announced: str) -> None:
    """A CONNECT far over the packet limit is not accepted and its connection is closed."""
    header = b"\x00\x04MQTT\x04\x02\x00\x1e"
    if announced == "1 MB":  # announced, not sent
        packet = b"\x10" + _remaining_length(1 << 20) + header + bytes(4096)
    else:
        client_id = b"c" * 20_000
        body = header + len(client_id).to_bytes(2, "big") + client_id
        packet = b"\x10" + _remaining_length(len(body)) + body
    answer = await _connect_answer(site.port, packet)
    # Mosquitto closes at once. amqtt reads a CONNECT field by field: with 1 MB announced it
    # finds no user name and answers "not authorized"; a field over the limit closes it.
    assert answer == b"" or (answer[0] == 0x20 and answer[3] != 0), answer


async def test_removed_account_refused_within_seconds(site: Site) -> None:
    at_hub: list[tuple[str, bytes]] = []
    hub = await _hub(site, at_hub)
    battery = await site.client(device_username(OWN))
    rotated = await site.client(device_username(OTHER))
    password = site.passwords.pop(device_username(OWN))
    site.passwords[device_username(OTHER)] = new_password()  # bess-8 gets a new password
    site.write()
    site.reload()
    removed_at = time.monotonic()
    while True:
        try:
            probe = await site.client(device_username(OWN), password=password)
        except MqttConnectRefusedError:
            break
        probe.abort()
        assert time.monotonic() - removed_at < 5.0, "removed account still logs in after 5 s"
        await asyncio.sleep(0.1)
    refused_after_s = time.monotonic() - removed_at
    print(f"{site.kind}: removed account refused {refused_after_s:.2f} s after the reload")
    # Sessions opened before the change (bess-7 removed, bess-8's password rotated):
    # Mosquitto 2.0.11 closes them on SIGHUP (it checks every client's login again); amqtt
    # keeps the TCP connections open, but the topic plugin lets them publish nothing more.
    if site.kind == "mosquitto":
        await _until(lambda: not battery.connected and not rotated.connected, timeout_s=5)
    else:
        for stale in (battery, rotated):
            await stale.publish_wait(_device(OWN, topics.STATUS), b"after-change", qos=1)
            await stale.publish_wait(_device(OTHER, topics.STATUS), b"after-change", qos=1)
    assert hub.connected  # an unchanged account keeps its session
    fresh = await site.client(device_username(OTHER))  # with the new password
    await fresh.publish_wait(_device(OTHER, topics.STATUS), b"marker", qos=1)
    await _until(lambda: any(p == b"marker" for _, p in at_hub))
    assert all(p != b"after-change" for _, p in at_hub)


# ---- TLS listener (Mosquitto) ---------------------------------------------------------


def _throwaway_pki(directory: Path) -> BrokerTlsFiles:
    """A CA and a broker certificate for 127.0.0.1 it signed (one day), in directory."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etp-test-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etp-broker")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = BrokerTlsFiles.in_data_dir(directory)
    files.ca_cert.parent.mkdir(parents=True)
    files.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    for path in (files.ca_cert.parent, files.key):
        path.chmod(0o755 if path.is_dir() else 0o644)  # throwaway: Mosquitto reads it as mosquitto
    return files


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
async def test_mosquitto_tls_listener(shared_dir: Path) -> None:
    tmp_path = shared_dir
    tls = _throwaway_pki(tmp_path)
    passwords = {HUB_USERNAME: new_password(), device_username(OWN): new_password()}
    port = free_port()
    files = write_mosquitto_config(
        tmp_path / "broker",
        _accounts(passwords),
        site=SITE,
        port=port,
        tls=tls,
        max_message_bytes=MAX_MESSAGE_BYTES,
        file_mode=0o644,
    )
    assert "tls_version tlsv1.2" in files.conf.read_text()
    process = subprocess.Popen(
        [MOSQUITTO_BIN, "-c", str(files.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        await wait_listening(port)
        context = tls_context(str(tls.ca_cert))
        user = device_username(OWN)
        plain = MqttClient(
            "127.0.0.1",
            port,
            "plain",
            lambda t, p: None,
            username=user,
            password=passwords[user],
            connect_timeout_s=3,
        )
        with pytest.raises(MqttError):
            await plain.connect()
        anonymous = MqttClient("127.0.0.1", port, "anon", lambda t, p: None, tls=context)
        with pytest.raises(MqttConnectRefusedError):
            await anonymous.connect()
        battery = MqttClient(
            "127.0.0.1",
            port,
            "bess",
            lambda t, p: None,
            tls=context,
            username=user,
            password=passwords[user],
        )
        await battery.connect()
        await battery.publish_wait(_device(OWN, topics.STATUS), b"over tls", qos=1)
        await battery.disconnect()
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()


def test_files_are_what_mosquitto_reads(tmp_path: Path) -> None:
    """The ACL is one block per account; no password appears in any file, only $7$ hashes."""
    passwords = {HUB_USERNAME: new_password(), device_username(OWN): new_password()}
    files = write_mosquitto_config(
        tmp_path, _accounts(passwords), site=SITE, max_message_bytes=MAX_MESSAGE_BYTES
    )
    acl = files.acl_file.read_text()
    assert f"user bess-{OWN}\ntopic write etp/v1/{SITE}/bess/{OWN}/birth\n" in acl
    assert f"topic read etp/v1/{SITE}/bess/{OWN}/req\ntopic read etp/v1/{SITE}/market/#" in acl
    assert "user hub\ntopic readwrite #" in acl
    assert "pattern" not in acl
    text = "".join(p.read_text() for p in (files.conf, files.password_file, files.acl_file))
    assert all(password not in text for password in passwords.values())
    conf = files.conf.read_text()
    assert "allow_anonymous false" in conf
    # listener options after `listener` (before it, Mosquitto opens a default port 1883)
    assert conf.index("listener 1883 127.0.0.1") < conf.index("use_username_as_clientid true")
    assert oct(os.stat(files.password_file).st_mode & 0o777) == "0o640"


# ---- the hub with its embedded broker -------------------------------------------------


async def test_hub_locks_its_embedded_broker_once_accounts_exist(tmp_path: Path) -> None:
    """`etp hub` with broker accounts: the embedded broker is locked and the hub logs in as
    `hub` with data_dir/broker-hub.password; before any account it stays open."""
    from hub.security.broker import (
        BrokerConfigError,
        apply_site_access,
        broker_config_dir,
        embedded_lock,
    )
    from tests.hub.helpers import hub_settings, running_hub

    assert embedded_lock(hub_settings(tmp_path)) is None  # a fresh demo: open (and logged)
    with pytest.raises(BrokerConfigError, match="etp device add"):
        embedded_lock(hub_settings(tmp_path, broker_locked=True))
    passwords = {HUB_USERNAME: new_password(), device_username(OWN): new_password()}
    (tmp_path / "broker-hub.password").write_text(passwords[HUB_USERNAME] + "\n")
    settings = hub_settings(tmp_path, site=SITE)
    assert settings.mqtt_username == HUB_USERNAME
    apply_site_access(settings, _accounts(passwords))
    assert (broker_config_dir(settings) / PASSWORD_FILE).exists()
    assert embedded_lock(settings) is not None
    async with running_hub(settings):  # start() fails if the broker refused the hub
        anonymous = MqttClient("127.0.0.1", settings.mqtt_port, "anon", lambda t, p: None)
        with pytest.raises(MqttConnectRefusedError):
            await anonymous.connect()
        seen: list[tuple[str, bytes]] = []
        battery = MqttClient(
            "127.0.0.1",
            settings.mqtt_port,
            "b7",
            lambda t, p: seen.append((t, p)),
            username=device_username(OWN),
            password=passwords[device_username(OWN)],
        )
        await battery.connect()
        await battery.subscribe([(f"etp/v1/{SITE}/market/#", 1)])
        # The hub's retained "online" (published as user hub) reaches the battery.
        await _until(lambda: (topics.market_topic(SITE, topics.HUB_STATE), b"online") in seen)
        await battery.disconnect()


def test_etp_broker_check_and_config(shared_dir: Path) -> None:
    """`etp broker check` says who may do what without a secret; `etp broker config` writes
    the operator's copy of the files from the site's accounts."""
    from typer.testing import CliRunner

    from hub.cli.main import app

    passwords = {HUB_USERNAME: new_password(), device_username(OWN): new_password()}
    accounts = _accounts(passwords)
    write_mosquitto_config(shared_dir / "broker", accounts, site="site1")
    runner = CliRunner()
    checked = runner.invoke(app, ["broker", "check", "--from-files", "--data-dir", str(shared_dir)])
    assert checked.exit_code == 0, checked.output
    assert f"publish: etp/v1/site1/bess/{OWN}/birth" in checked.output
    assert "anonymous clients: refused" in checked.output
    assert "embedded broker: LOCKED" in checked.output
    assert "$7$" not in checked.output
    assert all(password not in checked.output for password in passwords.values())
    out = shared_dir / "operator"
    written = runner.invoke(
        app,
        ["broker", "config", "--from-files", "--data-dir", str(shared_dir), "--out", str(out)],
    )
    assert written.exit_code == 0, written.output
    assert f"mosquitto -c {out / 'mosquitto.conf'}" in written.output
    assert "allow_anonymous false" in (out / "mosquitto.conf").read_text()
    assert (out / PASSWORD_FILE).read_text() == (shared_dir / "broker" / PASSWORD_FILE).read_text()


@pytest.mark.skipif(not mosquitto_available(), reason="mosquitto not installed")
async def test_apply_site_access_reloads_a_managed_mosquitto(shared_dir: Path) -> None:
    """A hub managing an external Mosquitto (ETP_BROKER_CONFIG_DIR, ETP_MOSQUITTO_PID_FILE):
    apply_site_access rewrites the files and sends SIGHUP; a removed battery is refused."""
    import grp
    import pwd

    from hub.security.broker import apply_site_access
    from tests.hub.helpers import hub_settings

    directory, run = shared_dir / "broker", shared_dir / "run"
    directory.mkdir()
    run.mkdir()
    if os.geteuid() == 0:  # Mosquitto runs as user mosquitto: the documented setgid recipe
        os.chown(directory, -1, grp.getgrnam("mosquitto").gr_gid)
        directory.chmod(0o2750)
        os.chown(run, pwd.getpwnam("mosquitto").pw_uid, -1)  # as /run/mosquitto
    port = free_port()
    settings = hub_settings(
        shared_dir,
        f"mqtt://127.0.0.1:{port}",
        site=SITE,
        broker_config_dir=directory,
        mosquitto_pid_file=run / "mosquitto.pid",
    )
    passwords = {HUB_USERNAME: new_password(), device_username(OWN): new_password()}
    files = write_mosquitto_config(  # what `etp broker config --pid-file` writes
        directory,
        _accounts(passwords),
        site=SITE,
        port=port,
        max_message_bytes=MAX_MESSAGE_BYTES,
        pid_file=settings.mosquitto_pid_file,
    )
    process = subprocess.Popen(
        [MOSQUITTO_BIN, "-c", str(files.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        try:
            await wait_listening(port)
        except Exception:
            process.kill()
            raise AssertionError(process.communicate(timeout=5)[1].decode(errors="replace"))
        site = Site("mosquitto", port, directory, passwords, lambda: None)
        await site.client(device_username(OWN))
        password = passwords.pop(device_username(OWN))
        await _until(lambda: (run / "mosquitto.pid").exists())
        conf_before = files.conf.read_text()
        apply_site_access(settings, _accounts(passwords))
        assert files.conf.read_text() == conf_before  # the operator's listener is kept
        await _until(lambda: not site.clients[0].connected, timeout_s=5)
        with pytest.raises(MqttConnectRefusedError):
            await site.client(device_username(OWN), password=password)
        await site.client(HUB_USERNAME)  # the hub still gets in after the reload
    finally:
        process.terminate()
        process.wait(timeout=10)
        assert process.stderr is not None
        process.stderr.close()
