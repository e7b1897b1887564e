"""Real MQTT brokers for tests: embedded amqtt and a Mosquitto subprocess, each on a free port.

They are async context managers yielding the broker URL ``mqtt://127.0.0.1:PORT`` (the TLS
ones also mqtts:// URLs and the certificate); they bind only to loopback and clean up on
exit, so test files can run them in parallel.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from hub.tools.ports import free_port

MOSQUITTO_BIN = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD_BIN = "/usr/bin/mosquitto_passwd"


class BrokerStartError(RuntimeError):
    """A test broker did not start listening in time."""


async def wait_listening(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something accepts TCP connections on 127.0.0.1:port."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if loop.time() > deadline:
                raise BrokerStartError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


def mosquitto_available() -> bool:
    """True when the Mosquitto binary is installed."""
    return Path(MOSQUITTO_BIN).exists() or shutil.which("mosquitto") is not None


@contextlib.asynccontextmanager
async def embedded_broker() -> AsyncIterator[str]:
    """Run the hub's embedded amqtt broker (hub.transport.broker, with its amqtt workarounds)
    in this event loop on a free loopback port; yield its URL."""
    from hub.transport.broker import EmbeddedBroker

    broker = EmbeddedBroker("127.0.0.1", free_port(), in_process=True)
    await broker.start()
    try:
        await wait_listening(broker.port)
        yield broker.url
    finally:
        await broker.stop()


@contextlib.asynccontextmanager
async def mosquitto_broker(port: int | None = None) -> AsyncIterator[str]:
    """Run Mosquitto as a subprocess on a free (or the given) loopback port; yield its URL."""
    binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
    if binary is None:
        raise BrokerStartError("mosquitto is not installed (scripts/setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="etp-mosq-") as tmp:
        port = port or free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\nlog_dest none\nmax_queued_messages 10000\n"
        )
        proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            try:
                await wait_listening(port)
            except BrokerStartError:
                proc.kill()
                err = proc.communicate(timeout=5)[1].decode(errors="replace")
                raise BrokerStartError(f"mosquitto did not start: {err.strip()}")
            yield f"mqtt://127.0.0.1:{port}"
        finally:
            _stop(proc)


class MosquittoProcess:
    """Mosquitto on one loopback port that can be stopped and started again on the same port
    (broker outages); its config lives in `directory`."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.conf = Path(directory) / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\nlog_dest none\nmax_queued_messages 10000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """mqtt://127.0.0.1:PORT"""
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start the broker and wait until it listens."""
        binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
        if binary is None:
            raise BrokerStartError("mosquitto is not installed (scripts/setup.sh installs it)")
        self.proc = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        try:
            await wait_listening(self.port)
        except BrokerStartError:
            self.proc.kill()
            err = self.proc.communicate(timeout=5)[1].decode(errors="replace")
            raise BrokerStartError(f"mosquitto did not start: {err.strip()}")

    def stop(self) -> None:
        """Stop the broker (its clients see the connection close)."""
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None


def make_self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed certificate and key for 127.0.0.1 (openssl), valid one day."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    # Mosquitto started as root drops to its own user, which must read the throwaway pair.
    directory.chmod(0o755)
    key.chmod(0o644)
    return cert, key


@contextlib.asynccontextmanager
async def mosquitto_tls_broker() -> AsyncIterator[tuple[str, str, Path]]:
    """Mosquitto with a plain and a TLS listener (self-signed); yields (mqtt://, mqtts://,
    certificate path)."""
    binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
    if binary is None or shutil.which("openssl") is None:
        raise BrokerStartError("mosquitto and openssl are needed for a TLS broker")
    with tempfile.TemporaryDirectory(prefix="etp-mosq-tls-") as tmp:
        cert, key = make_self_signed_cert(Path(tmp))
        plain, secure = free_port(), free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"per_listener_settings false\nallow_anonymous true\npersistence false\n"
            f"log_dest none\nlistener {plain} 127.0.0.1\nset_tcp_nodelay true\n"
            f"listener {secure} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n"
            "set_tcp_nodelay true\n"
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            try:
                await wait_listening(plain)
                await wait_listening(secure)
            except BrokerStartError:
                proc.kill()
                err = proc.communicate(timeout=5)[1].decode(errors="replace")
                raise BrokerStartError(f"mosquitto (TLS) did not start: {err.strip()}")
            yield f"mqtt://127.0.0.1:{plain}", f"mqtts://127.0.0.1:{secure}", cert
        finally:
            _stop(proc)


def _write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """A Mosquitto password file holding `users` (name -> password), hashed by
    mosquitto_passwd itself."""
    passwd = MOSQUITTO_PASSWD_BIN if Path(MOSQUITTO_PASSWD_BIN).exists() else "mosquitto_passwd"
    path.write_text("")
    for name, password in users.items():
        subprocess.run([passwd, "-b", str(path), name, password], check=True,
                       capture_output=True, timeout=30)
    path.chmod(0o644)  # read by Mosquitto after it dropped root


def make_client_cert(directory: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a client certificate it signed (CN=name), valid one day: returns
    (CA certificate, client certificate, client key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "client-ca.pem", directory / "client-ca.key"
    cert, key, csr = directory / "client.pem", directory / "client.key", directory / "client.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for command in (
        ["openssl", "req", "-x509", *ec, "-days", "1", "-subj", "/CN=etp-test-client-ca",
         "-keyout", str(ca_key), "-out", str(ca)],
        ["openssl", "req", "-new", *ec, "-subj", f"/CN={name}", "-keyout", str(key),
         "-out", str(csr)],
        ["openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-days", "1", "-out", str(cert)],
    ):
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    ca.chmod(0o644)
    return ca, cert, key


@dataclass
class SecureBroker:
    """A running Mosquitto that takes only TLS and only known users (and, when asked, only
    clients presenting `client_cert`)."""

    url: str  # mqtts://127.0.0.1:PORT
    ca_file: Path  # the broker's (self-signed) certificate: the CA clients must trust
    password_file: Path
    process: subprocess.Popen[bytes]
    client_cert: Path | None = None
    client_key: Path | None = None

    def set_users(self, users: Mapping[str, str]) -> None:
        """Replace the known users and make the running broker reload them (SIGHUP)."""
        _write_password_file(self.password_file, users)
        self.process.send_signal(signal.SIGHUP)


@contextlib.asynccontextmanager
async def mosquitto_secure_broker(
    users: Mapping[str, str], *, require_client_cert: bool = False
) -> AsyncIterator[SecureBroker]:
    """Mosquitto with one TLS listener (self-signed certificate for 127.0.0.1), anonymous
    clients refused, `users` (name -> password) accepted; with `require_client_cert`, only
    clients presenting the certificate made for them (SecureBroker.client_cert/key)."""
    binary = MOSQUITTO_BIN if Path(MOSQUITTO_BIN).exists() else shutil.which("mosquitto")
    if binary is None or shutil.which("openssl") is None:
        raise BrokerStartError("mosquitto and openssl are needed for a TLS broker")
    with tempfile.TemporaryDirectory(prefix="etp-mosq-auth-") as tmp:
        cert, key = make_self_signed_cert(Path(tmp))
        password_file = Path(tmp) / "passwords"
        _write_password_file(password_file, users)
        client_cert = client_key = None
        client_auth = ""
        if require_client_cert:
            client_ca, client_cert, client_key = make_client_cert(Path(tmp) / "client", "hub")
            client_auth = f"cafile {client_ca}\nrequire_certificate true\n"
        port = free_port()
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"per_listener_settings false\nallow_anonymous false\npassword_file {password_file}\n"
            f"persistence false\nlog_dest none\nlistener {port} 127.0.0.1\ncertfile {cert}\n"
            f"keyfile {key}\nset_tcp_nodelay true\n{client_auth}"
        )
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        try:
            try:
                await wait_listening(port)
            except BrokerStartError:
                proc.kill()
                err = proc.communicate(timeout=5)[1].decode(errors="replace")
                raise BrokerStartError(f"mosquitto (TLS, passwords) did not start: {err.strip()}")
            yield SecureBroker(f"mqtts://127.0.0.1:{port}", cert, password_file, proc,
                               client_cert, client_key)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a broker process this module started (terminate, then kill) and close its pipe."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()
