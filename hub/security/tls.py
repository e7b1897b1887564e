"""When the hub speaks TLS: the decision for the embedded broker, the hub's own MQTT link and
the HTTP gateway, made once from the settings and the site PKI (pure: no sockets).

The rule ("TLS on a real site"): a listener bound to a loopback address (127.0.0.0/8, ::1,
localhost) is reachable from this machine only, so plain TCP is fine there (`etp demo`).
Any other bind (0.0.0.0, ::, a LAN address, a host name) is a real site: the embedded broker
listens with TLS (mqtts://, port 8883 unless --mqtt-port is given) and the gateway serves
HTTPS, with the certificates `etp pki init` made (the gateway may use the operator's own,
ETP_GATEWAY_TLS_CERT / ETP_GATEWAY_TLS_KEY). Without certificates the hub refuses to start,
unless ETP_ALLOW_PLAINTEXT=true, and then it warns. The hub's link to an external broker
follows the same rule: mqtt:// to a non-loopback host needs ETP_ALLOW_PLAINTEXT.
ETP_TLS=on asks for TLS on loopback too.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from hub.security.pki import SitePki, TlsFiles, certificate_names, site_pki
from hub.settings import Settings
from hub.transport.broker import is_tls_url, parse_mqtt_url

__all__ = [
    "MQTTS_PORT",
    "PlaintextRefusedError",
    "SiteTls",
    "TlsSetupError",
    "is_loopback_host",
    "local_gateway_url",
    "plan_site_tls",
]

MQTTS_PORT = 8883
_WILDCARDS = ("", "0.0.0.0", "::", "*")


class TlsSetupError(RuntimeError):
    """TLS is asked for but cannot be set up (no certificates, a certificate without the
    address clients use, half an operator certificate); the message says what to run."""


class PlaintextRefusedError(TlsSetupError):
    """A listener or the link would carry plain text beyond this machine."""


def is_loopback_host(host: str) -> bool:
    """True for an address only this machine reaches: 127.0.0.0/8, ::1 and `localhost`.
    Wildcards (0.0.0.0, ::) and every other name count as reachable from the network."""
    host = host.strip().strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class SiteTls:
    """How this hub uses TLS (see the module docstring for the rule)."""

    broker_tls: TlsFiles | None = None  # the embedded broker's TLS listener (None: plain)
    broker_port: int = 1883  # the embedded broker's port
    link_url: str = ""  # what the hub (and the demo's boards) connect to
    link_ca_file: Path | None = None  # the CA the link verifies the broker with
    gateway_cert: Path | None = None  # None: plain HTTP
    gateway_key: Path | None = None
    warnings: tuple[str, ...] = field(default=())

    @property
    def gateway_https(self) -> bool:
        """True when the gateway serves HTTPS."""
        return self.gateway_cert is not None


def _need(settings: Settings, host: str) -> bool:
    return settings.tls == "on" or not is_loopback_host(host)


def _no_certificates(pki: SitePki, what: str, host: str) -> str:
    return (
        f"{what} binds {host or '*'}, which is not a loopback address, and the site has no "
        f"certificates in {pki.directory}: run `etp pki init --data-dir {pki.directory.parent}` "
        "(then flash the boards with its ca.crt: `etp firmware flash --ca-file "
        f"{pki.ca_cert}`), or bind to 127.0.0.1 (behind a reverse proxy, for the gateway), "
        "or set ETP_ALLOW_PLAINTEXT=true to accept plain text on the network"
    )


def local_gateway_url(settings: Settings, https: bool) -> str:
    """The address this machine reaches its own gateway at (a wildcard bind: loopback), for
    probes (`etp doctor`, the container's health check)."""
    host = settings.http_host
    if host in _WILDCARDS:
        host = "::1" if host == "::" else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if https else 'http'}://{host}:{settings.http_port}"


def plan_site_tls(settings: Settings) -> SiteTls:
    """Decide the TLS of the embedded broker, the link and the gateway; raises
    PlaintextRefusedError or TlsSetupError with the command that fixes it."""
    pki = site_pki(settings.data_dir)
    warnings: list[str] = []
    broker_tls: TlsFiles | None = None
    broker_port = settings.mqtt_port
    link_ca = settings.mqtt_ca_file
    if settings.embedded_broker:
        host = settings.mqtt_host
        if _need(settings, host):
            broker_tls = pki.broker
            if broker_tls is None:
                if settings.tls == "on" or not settings.allow_plaintext:
                    error = PlaintextRefusedError if settings.tls != "on" else TlsSetupError
                    raise error(_no_certificates(pki, "the embedded MQTT broker", host))
                warnings.append(
                    f"the embedded MQTT broker listens on {host or '*'}:{broker_port} in plain "
                    "text (ETP_ALLOW_PLAINTEXT=true): passwords and trades cross the network "
                    "readable; `etp pki init` makes certificates"
                )
        if broker_tls is not None:
            if "mqtt_port" not in settings.model_fields_set:
                broker_port = MQTTS_PORT
            connect = "127.0.0.1" if host in _WILDCARDS else host
            if connect not in certificate_names(broker_tls.cert):
                raise TlsSetupError(
                    f"the broker certificate {broker_tls.cert} does not name {connect}, the "
                    "address the hub connects to: renew it with `etp pki init --force "
                    f"--host {connect} ...`"
                )
            link_url = f"mqtts://{connect}:{broker_port}"
            link_ca = link_ca or broker_tls.ca_cert
        else:
            link_url = f"mqtt://{host}:{broker_port}"
    else:
        link_url = settings.resolved_mqtt_url()
        host = parse_mqtt_url(link_url)[0]
        if not is_tls_url(link_url) and not is_loopback_host(host):
            if not settings.allow_plaintext:
                raise PlaintextRefusedError(
                    f"the broker {link_url} is reached over plain MQTT across the network: use "
                    "mqtts:// (with --mqtt-ca-file, e.g. the site CA from `etp pki init`), or "
                    "set ETP_ALLOW_PLAINTEXT=true to accept plain text"
                )
            warnings.append(
                f"the hub reaches its broker {link_url} in plain text (ETP_ALLOW_PLAINTEXT="
                "true): its password and every frame cross the network readable"
            )
    gateway_cert, gateway_key = _gateway_files(settings, pki, warnings)
    return SiteTls(
        broker_tls=broker_tls,
        broker_port=broker_port,
        link_url=link_url,
        link_ca_file=link_ca,
        gateway_cert=gateway_cert,
        gateway_key=gateway_key,
        warnings=tuple(warnings),
    )


def _gateway_files(
    settings: Settings, pki: SitePki, warnings: list[str]
) -> tuple[Path | None, Path | None]:
    cert, key = settings.gateway_tls_cert, settings.gateway_tls_key
    if cert is not None or key is not None:
        if cert is None or key is None:
            raise TlsSetupError(
                "the gateway's own certificate needs both ETP_GATEWAY_TLS_CERT and "
                "ETP_GATEWAY_TLS_KEY"
            )
        for path in (cert, key):
            if not path.is_file():
                raise TlsSetupError(f"the gateway TLS file {path} does not exist")
        return cert, key
    if not settings.http_enabled or not _need(settings, settings.http_host):
        return None, None
    files = pki.gateway
    if files is not None:
        return files.cert, files.key
    if settings.tls == "on" or not settings.allow_plaintext:
        error = PlaintextRefusedError if settings.tls != "on" else TlsSetupError
        message = _no_certificates(pki, "the HTTP gateway", settings.http_host)
        raise error(
            message.replace(
                "run `etp pki init", "set ETP_GATEWAY_TLS_CERT/_KEY or run `etp pki init", 1
            )
        )
    warnings.append(
        f"the HTTP gateway serves plain HTTP on {settings.http_host or '*'}:"
        f"{settings.http_port} (ETP_ALLOW_PLAINTEXT=true): API keys cross the network readable"
    )
    return None, None
