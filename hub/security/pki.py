"""The site's own certificate authority: `etp pki init` makes it and the broker, hub and gateway
certificates (data_dir/pki); the hub, the embedded broker and the gateway use them for TLS.

Keys are ECDSA P-256 and certificates are signed with ECDSA-SHA256: what MicroPython's TLS
(mbedTLS on the ESP32 and the unix port), Mosquitto (OpenSSL), browsers and Python's ssl all
accept (Ed25519 is not supported by mbedTLS's TLS 1.2, which the boards speak).

Files (the directory 0700, keys 0600, certificates 0644):
    ca.crt / ca.key            the site CA (10 years); ca.crt goes on every board
    broker.crt / broker.key    the MQTT broker's server certificate (names and addresses)
    gateway.crt / gateway.key  the HTTPS gateway's server certificate (names and addresses)
    hub.crt / hub.key          the hub's client certificate (CN "hub"), for a broker that
                               asks for one (Mosquitto `require_certificate`)
Key material is never logged or printed; `show` reports subjects, names, expiry and SHA-256
fingerprints of the certificates only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import socket
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CA_DAYS",
    "DEFAULT_DAYS",
    "EXPIRY_WARNING_DAYS",
    "CertificateInfo",
    "PkiError",
    "PkiExistsError",
    "SitePki",
    "TlsFiles",
    "certificate_names",
    "default_hosts",
    "describe_certificate",
    "site_pki",
]

DEFAULT_DAYS = 397  # server certificates: within what every TLS client accepts (398 days)
CA_DAYS = 3650  # the CA outlives many server certificates: boards keep it across renewals
EXPIRY_WARNING_DAYS = 30
_ROLES = ("broker", "gateway", "hub")
_SIOCGIFADDR = 0x8915  # Linux ioctl: an interface's IPv4 address


class PkiError(RuntimeError):
    """The site PKI cannot be made or read; the message says what to do."""


class PkiExistsError(PkiError):
    """`init` would overwrite certificates that exist (use --force)."""


@dataclass(frozen=True)
class TlsFiles:
    """A certificate, its private key and the CA certificate it chains to (PEM files)."""

    ca_cert: Path
    cert: Path
    key: Path


@dataclass(frozen=True)
class CertificateInfo:
    """What `etp pki show` tells about one certificate (nothing secret)."""

    role: str
    path: Path
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    sha256: str

    def days_left(self, now: dt.datetime | None = None) -> float:
        """Days until it expires (negative once expired)."""
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).total_seconds() / 86400


class SitePki:
    """The PKI files of one site in `directory` (data_dir/pki)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca_cert = self.directory / "ca.crt"
        self.ca_key = self.directory / "ca.key"

    def _files(self, role: str) -> TlsFiles:
        return TlsFiles(
            self.ca_cert, self.directory / f"{role}.crt", self.directory / f"{role}.key"
        )

    def _present(self, role: str) -> TlsFiles | None:
        files = self._files(role)
        if all(path.is_file() for path in (files.ca_cert, files.cert, files.key)):
            return files
        return None

    @property
    def broker(self) -> TlsFiles | None:
        """The MQTT broker's server certificate (None until `etp pki init`)."""
        return self._present("broker")

    @property
    def hub(self) -> TlsFiles | None:
        """The hub's MQTT client certificate, CN "hub" (None until `etp pki init`)."""
        return self._present("hub")

    @property
    def gateway(self) -> TlsFiles | None:
        """The HTTPS gateway's server certificate (None until `etp pki init`)."""
        return self._present("gateway")

    def exists(self) -> bool:
        """True once `etp pki init` made every file."""
        return all(self._present(role) is not None for role in _ROLES)

    def paths(self) -> list[Path]:
        """Every file `init` writes."""
        files = [self.ca_cert, self.ca_key]
        for role in _ROLES:
            files += [self._files(role).cert, self._files(role).key]
        return files

    def init(
        self,
        hosts: Sequence[str] = (),
        *,
        days: int = DEFAULT_DAYS,
        force: bool = False,
        new_ca: bool = False,
        site: str = "site1",
    ) -> list[Path]:
        """Make the site CA (unless it exists and `new_ca` is False) and issue the broker,
        gateway and hub certificates; the servers' certificates name `hosts` (DNS names or IP
        addresses; default `default_hosts()`), always with localhost and 127.0.0.1 so the hub
        reaches its own broker. Refuses to overwrite anything without `force`. Renewing with
        `force` keeps the CA, so boards that hold ca.crt need nothing new; `new_ca` replaces
        it too (every board then needs the new ca.crt). Returns the files written."""
        if days < 1:
            raise PkiError("--days must be at least 1")
        existing = [path for path in self.paths() if path.exists()]
        if existing and not force:
            raise PkiExistsError(
                f"{self.directory} already holds certificates ({existing[0].name}, ...): "
                "`etp pki init --force` renews the server certificates with the same CA, "
                "`--force --new-ca` replaces the CA too (every board then needs the new ca.crt)"
            )
        names = _normalised_hosts([*hosts, "localhost", "127.0.0.1"] if hosts else default_hosts())
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        written: list[Path] = []
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # clocks a little behind
        if new_ca or not (self.ca_cert.is_file() and self.ca_key.is_file()):
            ca_key = ec.generate_private_key(ec.SECP256R1())
            ca_cert = _ca_certificate(ca_key, site, now)
            _write_private_key(self.ca_key, ca_key)
            _write_public(self.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
            written += [self.ca_cert, self.ca_key]
        else:
            ca_cert, ca_key = self._load_ca()
        for role in _ROLES:
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _leaf_certificate(
                role, key, ca_cert, ca_key, names if role != "hub" else [], now, days, site
            )
            files = self._files(role)
            _write_private_key(files.key, key)
            _write_public(files.cert, cert.public_bytes(serialization.Encoding.PEM))
            written += [files.cert, files.key]
        return written

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        try:
            cert = x509.load_pem_x509_certificate(self.ca_cert.read_bytes())
            key = serialization.load_pem_private_key(self.ca_key.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise PkiError(
                f"cannot read the site CA in {self.directory} ({type(exc).__name__}): "
                "restore it, or make a new one with `etp pki init --force --new-ca`"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"{self.ca_key} is not an EC key: `etp pki init --force --new-ca`")
        return cert, key

    def show(self) -> list[CertificateInfo]:
        """Subjects, names, expiry and fingerprints of the CA and every certificate present."""
        found = [("ca", self.ca_cert)] + [(role, self._files(role).cert) for role in _ROLES]
        return [describe_certificate(role, path) for role, path in found if path.is_file()]


def site_pki(data_dir: Path) -> SitePki:
    """The site PKI of a hub's data directory (data_dir/pki)."""
    return SitePki(Path(data_dir) / "pki")


def describe_certificate(role: str, path: Path) -> CertificateInfo:
    """A certificate file's public facts."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise PkiError(f"cannot read the certificate {path}: {exc}") from None
    return CertificateInfo(
        role=role,
        path=path,
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        names=tuple(certificate_names(cert)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
    )


def certificate_names(cert: x509.Certificate | Path) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (its subjectAltName)."""
    if isinstance(cert, Path):
        cert = x509.load_pem_x509_certificate(cert.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    dns = san.get_values_for_type(x509.DNSName)
    ips = [str(address) for address in san.get_values_for_type(x509.IPAddress)]
    return [*dns, *ips]


def default_hosts() -> list[str]:
    """The names a server certificate gets by default: this machine's host name (and its
    fully qualified name), localhost, 127.0.0.1, ::1 and every non-loopback address of the
    machine's interfaces (so boards and browsers on the LAN can reach it by address)."""
    hosts = [socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"]
    hosts += _interface_addresses()
    return _normalised_hosts(hosts)


def _interface_addresses() -> list[str]:
    """Non-loopback IPv4 and global IPv6 addresses of this machine's interfaces (Linux: the
    interfaces' own addresses, no traffic; elsewhere the host name's addresses)."""
    found: list[str] = []
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                reply = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, request)
                found.append(socket.inet_ntoa(reply[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            address = ipaddress.IPv6Address(bytes.fromhex(raw))
            if address.is_global or (address.is_private and not address.is_link_local):
                found.append(str(address))
    with contextlib.suppress(OSError):
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.append(str(info[4][0]))
    return [host for host in found if not _is_loopback_ip(host)]


def _is_loopback_ip(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified or address.is_link_local


def _normalised_hosts(hosts: Iterable[str]) -> list[str]:
    """Hosts without duplicates, IP addresses in canonical form, names lower case; a name
    that is neither a DNS name nor an address is refused."""
    seen: list[str] = []
    for host in hosts:
        host = host.strip().strip("[]")
        if not host:
            continue
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            host = host.lower().rstrip(".")
            labels = host.split(".")
            if not all(
                label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum()
                for label in labels
            ) or host.startswith("*"):
                raise PkiError(f"{host!r} is neither a DNS name nor an IP address") from None
        if host not in seen:
            seen.append(host)
    return seen


def _subject_alt_names(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in hosts:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, site: str, now: dt.datetime
) -> x509.Certificate:
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ETP"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ETP site CA {site}"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    role: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    hosts: Sequence[str],
    now: dt.datetime,
    days: int,
    site: str,
) -> x509.Certificate:
    common_name = "hub" if role == "hub" else f"etp-{role} {site}"
    usage = ExtendedKeyUsageOID.CLIENT_AUTH if role == "hub" else ExtendedKeyUsageOID.SERVER_AUTH
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ETP"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if hosts:
        builder = builder.add_extension(_subject_alt_names(hosts), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write a key 0600 from its first byte (a temporary file renamed over the old one)."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, data, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    write_atomically(path, data, 0o644)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` with `data` in one rename, durable (fsynced) and with `mode` from its
    first byte: a reader sees the old file or the new one, never part of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
