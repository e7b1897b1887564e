"""`etp doctor`: checks one deployment from its ETP_* settings and says what to fix.

Each check returns one line (ok / warn / FAIL, what was found, the command that fixes it) and
has its own deadline (3 s by default); they run concurrently, so the whole run takes about as
long as the slowest. Nothing secret is ever put in a line: URLs are shown without passwords,
key files by path and mode only.

The broker check never logs in as an account the site's own broker password file lists (the
hub's `hub` account): Mosquitto gives every login its user name as client id, so a second
login as `hub` would disconnect the running hub. For such an account the password is checked
against that file, and the broker is asked to accept an anonymous CONNECT (a locked broker
refuses it). Other credentials (a broker run by someone else) are tried with a real CONNECT.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import os
import shutil
import ssl
import stat
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.settings import Settings

__all__ = ["Check", "CheckStatus", "DoctorReport", "run_doctor"]

DEFAULT_TIMEOUT_S = 3.0
CERT_WARNING_DAYS = 30


class CheckStatus(enum.Enum):
    """How one check came out."""

    OK = "ok"
    WARN = "warn"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """The outcome of one check: what was found and, unless ok, how to fix it."""

    name: str
    status: CheckStatus
    detail: str
    fix: str | None = None

    def line(self) -> str:
        """One line for a terminal."""
        text = f"{self.status.value:<4}  {self.name:<18} {self.detail}"
        return text + (f"  -> fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "status": self.status.value,
            "detail": self.detail,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class DoctorReport:
    """Every check of one run."""

    checks: list[Check]

    @property
    def failed(self) -> bool:
        """True when any check is FAIL (the exit code is then 1)."""
        return any(check.status is CheckStatus.FAIL for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"ok": not self.failed, "checks": [check.as_dict() for check in self.checks]}


def _ok(name: str, detail: str) -> Check:
    return Check(name, CheckStatus.OK, detail)


def _warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, CheckStatus.WARN, detail, fix)


def _fail(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name, CheckStatus.FAIL, detail, fix)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- database --------------------------------------------------------------------------------


async def check_database(settings: Settings, timeout_s: float) -> list[Check]:
    """Reachable, and migrated to the revision this etp knows as newest."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store import current_revision, head_revision

    name = "database"
    url = make_url(settings.resolved_database_url())
    shown = url.render_as_string(hide_password=True)
    head = head_revision()
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(str(url.database))
        if not path.exists():
            return [_fail(name, f"no database at {path}", "etp db upgrade")]
    connect_args = (
        {"connect_timeout": max(1, int(timeout_s))}
        if url.get_backend_name() == "postgresql"
        else {}
    )
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        revision = await current_revision(engine)
    except Exception as exc:  # any driver error: unreachable, refused, bad password
        return [
            _fail(
                name,
                f"cannot read {shown}: {_reason(exc)}",
                "check ETP_DATABASE_URL and that the database server runs",
            )
        ]
    finally:
        await engine.dispose()
    if revision == head:
        return [_ok(name, f"{shown} at {head} (head)")]
    if revision is None:
        return [_fail(name, f"{shown} was never migrated", "etp db upgrade")]
    from hub.ops.backup import known_revisions

    if revision not in known_revisions()[0]:
        return [
            _fail(
                name,
                f"{shown} is at {revision}, newer than this etp (head {head})",
                "upgrade etp to the version that made it",
            )
        ]
    return [_fail(name, f"{shown} is at {revision}, head is {head}", "etp db upgrade")]


# ---- files and modes -------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_files(settings: Settings) -> list[Check]:
    """The data dir exists and is the owner's only; the master secret is present and usable;
    every key file is 0600 (readable by its owner only)."""
    from hub.security.broker import HUB_PASSWORD_FILE, broker_config_dir
    from hub.security.pki import site_pki

    checks: list[Check] = []
    data_dir = settings.data_dir.absolute()
    if not data_dir.is_dir():
        return [
            _fail(
                "data dir",
                f"{data_dir} does not exist",
                f"etp db upgrade --data-dir {data_dir} (or set ETP_DATA_DIR to the site's)",
            )
        ]
    open_dirs = [
        directory
        for directory in (data_dir, site_pki(data_dir).directory)
        if directory.is_dir() and _mode(directory) & 0o077
    ]
    broker_dir = broker_config_dir(settings)
    if broker_dir.is_dir() and _mode(broker_dir) & 0o007:
        open_dirs.append(broker_dir)  # group mosquitto may read it (setgid 2750)
    if open_dirs:
        shown = ", ".join(f"{d} ({_mode(d):04o})" for d in open_dirs)
        checks.append(
            _warn(
                "data dir",
                f"others may list or read: {shown}",
                "chmod 700 "
                + " ".join(str(d) for d in open_dirs if d != broker_dir)
                + (f"; chmod 2750 {broker_dir}" if broker_dir in open_dirs else ""),
            )
        )
    else:
        checks.append(_ok("data dir", f"{data_dir} (0700)"))

    master = settings.master_secret_path().absolute()
    if not master.is_file():
        checks.append(
            _fail(
                "master secret",
                f"{master} is missing (every battery's key derives from it)",
                "restore it from the site's backup; on a new site `etp hub` creates it",
            )
        )
    else:
        try:
            secret = bytes.fromhex(master.read_text().strip())
        except (OSError, ValueError):
            secret = b""
        if len(secret) < 16:
            checks.append(
                _fail(
                    "master secret",
                    f"{master} does not hold a hex secret of 16 bytes or more",
                    "restore it from the site's backup",
                )
            )
        else:
            checks.append(_ok("master secret", f"{master} ({len(secret)} bytes)"))

    pki = site_pki(data_dir)
    keys = [
        master,
        settings.settler_key_path(),
        settings.authority_key_path(),
        data_dir / HUB_PASSWORD_FILE,
        pki.ca_key,
        *(pki.directory / f"{role}.key" for role in ("broker", "gateway", "hub")),
    ]
    present = [key for key in keys if key.is_file()]
    loose = [key for key in present if _mode(key) & 0o077]
    if loose:
        shown = ", ".join(f"{key} ({_mode(key):04o})" for key in loose)
        checks.append(
            _fail(
                "key modes",
                f"readable by others: {shown}",
                "chmod 600 " + " ".join(str(key) for key in loose),
            )
        )
    else:
        checks.append(_ok("key modes", f"{len(present)} key files, all 0600"))
    return checks


def check_certificates(settings: Settings) -> list[Check]:
    """Site certificates (`etp pki init`) valid for more than 30 days."""
    from hub.security.pki import PkiError, site_pki

    pki = site_pki(settings.data_dir)
    try:
        infos = pki.show()
    except PkiError as exc:
        return [_fail("certificates", str(exc), "etp pki init --force")]
    if not infos:
        return [_ok("certificates", f"none in {pki.directory} (TLS not in use)")]
    soonest = min(infos, key=lambda info: info.not_after)
    days = soonest.days_left()
    when = f"{soonest.role} {soonest.path.name} expires {soonest.not_after:%Y-%m-%d}"
    renew = "etp pki init --force (same CA: boards need nothing new)"
    if soonest.role == "ca":
        renew = "etp pki init --force --new-ca (every board then needs the new ca.crt)"
    if days < 0:
        return [_fail("certificates", f"{when}: expired", renew)]
    if days < CERT_WARNING_DAYS:
        return [_warn("certificates", f"{when}, in {days:.0f} days", renew)]
    return [_ok("certificates", f"{len(infos)} valid; soonest: {when} ({days:.0f} days)")]


# ---- broker ----------------------------------------------------------------------------------


def _site_password_hash(settings: Settings, username: str) -> str | None:
    from hub.security.broker import (
        PASSWORD_FILE,
        AccessFileError,
        accounts_from_password_file,
        broker_config_dir,
    )

    try:
        accounts = accounts_from_password_file(broker_config_dir(settings) / PASSWORD_FILE)
    except (OSError, AccessFileError):
        return None
    return next((a.password_hash for a in accounts if a.username == username), None)


async def _peer_certificate_expiry(
    host: str, port: int, context: ssl.SSLContext
) -> dt.datetime | None:
    _reader, writer = await asyncio.open_connection(host, port, ssl=context, server_hostname=host)
    try:
        cert = writer.get_extra_info("peercert")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    if not cert or "notAfter" not in cert:
        return None
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.UTC)


async def check_broker(settings: Settings, timeout_s: float) -> list[Check]:
    """CONNECT → CONNACK on the URL the hub uses (TLS verified for mqtts://), its credentials
    checked; the broker certificate's expiry; plain MQTT beyond this machine."""
    from hub.security.accounts import verify_password
    from hub.security.tls import TlsSetupError, is_loopback_host, plan_site_tls
    from hub.transport.broker import BrokerError, is_tls_url, parse_mqtt_url
    from hub.transport.mqtt import (
        MqttClient,
        MqttConnectRefusedError,
        MqttError,
        MqttTlsError,
        TlsConfigError,
        tls_context,
    )

    name = "broker"
    try:
        plan = plan_site_tls(settings)
        url = plan.link_url
        host, port = parse_mqtt_url(url)
        secure = is_tls_url(url)
    except (TlsSetupError, BrokerError) as exc:
        return [_fail(name, str(exc))]
    context = None
    if secure:
        try:
            context = tls_context(
                str(plan.link_ca_file) if plan.link_ca_file else None,
                str(settings.mqtt_cert_file) if settings.mqtt_cert_file else None,
                str(settings.mqtt_key_file) if settings.mqtt_key_file else None,
            )
        except TlsConfigError as exc:
            return [_fail(name, str(exc), "fix ETP_MQTT_CA_FILE / ETP_MQTT_CERT_FILE")]
    username = settings.mqtt_username
    password = settings.mqtt_password.get_secret_value() if settings.mqtt_password else None
    checks: list[Check] = []
    # The site's own accounts: check the password offline, connect anonymously (see module doc).
    site_hash = _site_password_hash(settings, username) if username else None
    if site_hash is not None:
        if password is None or not verify_password(password, site_hash):
            checks.append(
                _fail(
                    "broker login",
                    f"the password of {username!r} does not match the broker's password file",
                    f"set ETP_MQTT_PASSWORD to {username}'s password (or remove it to use "
                    f"{settings.data_dir}/broker-hub.password); `etp broker config` rewrites "
                    "the broker's files",
                )
            )
        else:
            checks.append(_ok("broker login", f"{username!r} matches the broker's password file"))
    login_user, login_password = (None, None) if site_hash is not None else (username, password)
    client = MqttClient(
        host,
        port,
        f"etp-doctor-{os.getpid()}",
        lambda _topic, _payload: None,
        keepalive_s=0,
        connect_timeout_s=timeout_s,
        tls=context,
        username=login_user,
        password=login_password,
    )
    where = f"{url} ({'TLS verified' if secure else 'plain TCP'})"
    start_hub = (
        "start the hub (`etp hub`): the embedded broker runs inside it"
        if settings.embedded_broker
        else "start the broker (e.g. `systemctl start mosquitto`) or fix ETP_MQTT_URL"
    )
    try:
        await client.connect()
    except MqttConnectRefusedError as exc:
        if site_hash is not None and exc.code in (4, 5):
            checks.append(_ok(name, f"{where} answers; anonymous clients refused"))
        elif exc.code in (4, 5):
            checks.append(
                _fail(
                    name,
                    f"{where}: {exc}" + (f" (user {username!r})" if username else ""),
                    "check ETP_MQTT_USERNAME / ETP_MQTT_PASSWORD (and the broker's accounts)",
                )
            )
        else:
            checks.append(_fail(name, f"{where}: {exc}"))
    except MqttTlsError as exc:
        checks.append(
            _fail(
                name,
                str(exc),
                "check ETP_MQTT_CA_FILE and that the host in ETP_MQTT_URL is a name the "
                "broker's certificate holds",
            )
        )
    except MqttError as exc:
        checks.append(_fail(name, str(exc), start_hub))
    else:
        with contextlib.suppress(MqttError, OSError):
            await client.disconnect()
        if site_hash is not None:
            checks.append(
                _warn(
                    name,
                    f"{where} accepts anonymous clients",
                    "restart the hub (it locks its embedded broker) or use the mosquitto.conf "
                    "`etp broker config` writes (allow_anonymous false)",
                )
            )
        else:
            who = f"as {username!r}" if username else "anonymously"
            checks.append(_ok(name, f"{where}: CONNACK accepted {who}"))
    if not secure and not is_loopback_host(host):
        checks.append(
            _warn(
                "broker transport",
                f"plain MQTT to {host}: passwords and trades cross the network readable",
                "use mqtts:// in ETP_MQTT_URL with ETP_MQTT_CA_FILE (`etp pki init`)",
            )
        )
    if context is not None and not any(c.status is CheckStatus.FAIL for c in checks):
        try:
            expiry = await _peer_certificate_expiry(host, port, context)
        except (OSError, ssl.SSLError) as exc:
            checks.append(_warn("broker certificate", f"cannot read it: {_reason(exc)}"))
        else:
            if expiry is not None:
                days = (expiry - dt.datetime.now(dt.UTC)).total_seconds() / 86400
                detail = f"expires {expiry:%Y-%m-%d} ({days:.0f} days)"
                if days < CERT_WARNING_DAYS:
                    checks.append(
                        _warn(
                            "broker certificate",
                            detail,
                            "renew it (`etp pki init --force` for the site's own)",
                        )
                    )
                else:
                    checks.append(_ok("broker certificate", detail))
    return checks


# ---- clock, ledger, gateway ------------------------------------------------------------------


def check_clock(_settings: Settings) -> list[Check]:
    """The system clock is synchronised (systemd-timesyncd or chrony, through timedatectl)."""
    binary = shutil.which("timedatectl")
    answer = None
    if binary:
        try:
            done = subprocess.run(
                [binary, "show", "-p", "NTPSynchronized", "--value"],
                capture_output=True,
                text=True,
                timeout=DEFAULT_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            done = None
        if done is not None and done.returncode == 0:
            answer = done.stdout.strip()
    if answer == "yes":
        return [_ok("clock", "synchronised (NTP)")]
    if answer == "no":
        return [
            _fail(
                "clock",
                "not synchronised: auction deadlines and trade times drift",
                "timedatectl set-ntp true (and check that NTP servers are reachable)",
            )
        ]
    return [
        _warn(
            "clock",
            "synchronisation unknown (no timedatectl answer: not a systemd host?)",
            "make sure NTP (chrony or systemd-timesyncd) keeps this clock in sync",
        )
    ]


async def check_ledger(settings: Settings, timeout_s: float) -> list[Check]:
    """The settlement cluster answers getSlot (not for the embedded ledger or off)."""
    network = settings.settlement_network
    if network == "embedded":
        return [_ok("ledger", "embedded (inside the hub)")]
    if network == "off":
        return [_ok("ledger", "settlement off (ETP_SETTLEMENT_NETWORK=off)")]
    from hub.settlement.rpc import RpcCluster, RpcRequestError, safe_endpoint

    url = settings.settlement_rpc_endpoint()
    fix = "check ETP_SETTLEMENT_RPC_URL and that the cluster runs"
    if network == "localnet":
        fix += " (e.g. `solana-test-validator`)"
    try:
        cluster = RpcCluster(url, name=network, timeout_s=timeout_s)
    except ValueError as exc:
        return [_fail("ledger", str(exc), "fix ETP_SETTLEMENT_RPC_URL")]
    try:
        slot = await cluster.slot()
    except RpcRequestError as exc:
        return [_fail("ledger", f"{network} {safe_endpoint(url)}: {exc}", fix)]
    except Exception as exc:  # ClusterUnavailableError and transport errors
        return [_fail("ledger", f"{network}: {_reason(exc)}", fix)]
    finally:
        await cluster.close()
    return [_ok("ledger", f"{network} {safe_endpoint(url)} at slot {slot}")]


async def check_gateway(settings: Settings, url: str | None, timeout_s: float) -> list[Check]:
    """The HTTP gateway answers /health/ready (when enabled, or when --url is given)."""
    import httpx

    from hub.security.pki import site_pki
    from hub.security.tls import TlsSetupError, local_gateway_url, plan_site_tls

    if url is None and not settings.http_enabled:
        return [_ok("http gateway", "disabled (ETP_HTTP_ENABLED=false)")]
    verify: ssl.SSLContext | bool = True
    if url is None:
        try:
            plan = plan_site_tls(settings)
        except TlsSetupError as exc:
            return [_fail("http gateway", str(exc))]
        url = local_gateway_url(settings, plan.gateway_https)
    ca = site_pki(settings.data_dir).ca_cert
    if url.startswith("https://") and ca.is_file():
        verify = ssl.create_default_context(cafile=str(ca))
    probe = url.rstrip("/") + "/health/ready"
    try:
        async with httpx.AsyncClient(timeout=timeout_s, verify=verify) as client:
            response = await client.get(probe)
    except httpx.HTTPError as exc:
        return [
            _fail(
                "http gateway",
                f"{probe}: {type(exc).__name__}: {_reason(exc)}",
                "start the hub (`etp hub`), or check ETP_HTTP_HOST / ETP_HTTP_PORT (or --url)",
            )
        ]
    if response.status_code == 200:
        return [_ok("http gateway", f"{probe} ready")]
    if response.status_code == 503:
        return [
            _warn(
                "http gateway",
                f"{probe} answers but is not ready (its broker link or store is down)",
                "see the broker and database lines, and the hub's log",
            )
        ]
    return [_fail("http gateway", f"{probe} answered HTTP {response.status_code}")]


# ---- run -------------------------------------------------------------------------------------


async def _bounded(
    name: str, timeout_s: float, run: Callable[[], Awaitable[list[Check]]]
) -> list[Check]:
    try:
        async with asyncio.timeout(timeout_s):
            return await run()
    except TimeoutError:
        return [_fail(name, f"no answer within {timeout_s:g} s")]
    except Exception as exc:  # a check must never take the others down
        return [_fail(name, f"check failed: {type(exc).__name__}: {_reason(exc)}")]


async def check_workers(settings: Settings, timeout_s: float) -> list[Check]:
    """Hub workers (ETP_WORKER): the shared broker and PostgreSQL are set, and which workers
    of the site are alive now (their heartbeats in the database)."""
    if not settings.worker:
        return []
    problem = settings.worker_problem()
    if problem is not None:
        return [_fail("workers", problem)]
    from sqlalchemy.ext.asyncio import create_async_engine

    from hub.store.cluster import live_workers_query
    from shared_etp.compat import now_ms

    engine = create_async_engine(settings.resolved_database_url(),
                                 connect_args={"connect_timeout": max(1, int(timeout_s))})
    try:  # read only: the database check says whether it is migrated
        async with engine.connect() as connection:
            rows = (await connection.execute(live_workers_query(
                settings.site, now_ms() - settings.worker_lease_ms))).fetchall()
        live = [row.worker_id for row in rows]
    except Exception as exc:
        return [_warn("workers", f"live workers unknown: {_reason(exc)}")]
    finally:
        await engine.dispose()
    if not live:
        return [_warn("workers", f"no worker of site {settings.site} is running",
                      "start one: etp hub --worker (or systemctl start etp-hub-worker@1)")]
    names = ", ".join(live)
    return [_ok("workers", f"{len(live)} live on site {settings.site}: {names}")]


async def run_doctor(
    settings: Settings, *, http_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> DoctorReport:
    """Run every check concurrently, each within `timeout_s`; in a fixed order."""

    def threaded(check: Callable[[Settings], list[Check]]) -> Callable[[], Awaitable[list[Check]]]:
        return lambda: asyncio.to_thread(check, settings)

    runs: list[tuple[str, Callable[[], Awaitable[list[Check]]]]] = [
        ("database", lambda: check_database(settings, timeout_s)),
        ("data dir", threaded(check_files)),
        ("broker", lambda: check_broker(settings, timeout_s)),
        ("certificates", threaded(check_certificates)),
        ("clock", threaded(check_clock)),
        ("ledger", lambda: check_ledger(settings, timeout_s)),
        ("http gateway", lambda: check_gateway(settings, http_url, timeout_s)),
        ("workers", lambda: check_workers(settings, timeout_s)),
    ]
    # A check's own deadline is timeout_s; the wrapper allows a little more for its cleanup.
    results = await asyncio.gather(*(_bounded(name, timeout_s + 0.5, run) for name, run in runs))
    return DoctorReport([check for group in results for check in group])
