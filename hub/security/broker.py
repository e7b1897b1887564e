"""Who may do what on the site's broker, written once for Mosquitto and read by the embedded one.

One set of rules, from the broker accounts (hub/security/accounts.py):
- no anonymous client; every login is a known user name with its password;
- battery `bess-N` may publish only etp/v1/<site>/bess/N/{birth,death,status,resp} (its last
  will is on its own death topic) and read only etp/v1/<site>/bess/N/req and
  etp/v1/<site>/market/#;
- user `hub` may publish and read every topic (it alone sends requests and market notices and
  watches every battery).

`write_mosquitto_config` turns the accounts into three files: a password file (`user:$7$...`
lines, as mosquitto_passwd writes them), an ACL file (one `user` block per account, since a
Mosquitto `pattern` with %u cannot turn `bess-7` into `7`) and a mosquitto.conf using them.
The embedded amqtt broker's plugins (hub/security/amqtt_plugins.py) read the same password and
ACL files through `ReloadingAccess`, which notices a change within a second.

What a change does to clients (measured in tests/security/test_broker_lockdown.py):
- Mosquitto 2.0.11, on SIGHUP, reads both files again and closes every connected client whose
  account was removed or whose password changed (within ~0.1 s); other clients keep their
  sessions. A removed account's next login is refused at once. (The dynamic-security plugin,
  /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so in Debian's package, is therefore
  not needed.) It grants a subscription to `#` by a battery but delivers nothing its ACL does
  not let that user read, and drops a last will on a topic the user may not write. Its
  client ids are the user names (use_username_as_clientid): one connection per account.
- amqtt: new logins are refused within ~1 s of the files changing. A client still connected
  keeps its TCP connection, but its login is checked again against the new files, so it may
  publish, subscribe and receive nothing more (it is not disconnected). It answers a
  subscription outside the ACL with SUBACK 0x80 and refuses a CONNECT whose will is on a
  topic the user may not write, or whose client id belongs to another user's session (the
  hub's broker checks both before amqtt touches its session table). amqtt has no size
  limit of its own: the hub's broker (hub/transport/broker.py) drops messages over the
  payload limit and closes connections sending packets over limit + 1 KiB, as Mosquitto's
  message_size_limit and max_packet_size do.
In both cases frames that still arrive from a revoked battery are refused by the hub itself.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import structlog

from hub.security.accounts import HUB_USERNAME, BrokerAccount, verify_password
from hub.security.pki import write_atomically
from shared_etp.topics import BIRTH, DEATH, REQUEST, RESPONSE, STATUS, device_topic, market_topic

if TYPE_CHECKING:
    from hub.settings import Settings

__all__ = [
    "ACL_FILE",
    "CONF_FILE",
    "HUB_PASSWORD_FILE",
    "PASSWORD_FILE",
    "AccessFileError",
    "BrokerConfigError",
    "BrokerTlsFiles",
    "EmbeddedLock",
    "MosquittoFiles",
    "ReloadingAccess",
    "SiteAccess",
    "TlsPaths",
    "TopicGrant",
    "accounts_from_password_file",
    "apply_site_access",
    "broker_config_dir",
    "embedded_lock",
    "filter_covers",
    "grants_for",
    "hub_broker_password",
    "read_site_access",
    "reload_mosquitto",
    "topic_matches",
    "write_mosquitto_config",
]

log = structlog.get_logger(__name__)

PASSWORD_FILE = "passwords"
ACL_FILE = "acl"
CONF_FILE = "mosquitto.conf"
HUB_PASSWORD_FILE = "broker-hub.password"  # in data_dir; written 0600 by hub/security/devices.py
_BATTERY_WRITES = (BIRTH, DEATH, STATUS, RESPONSE)
_BATTERY_READS = (REQUEST,)
# Room for the fixed header, topic and packet id around the largest accepted payload: a packet
# bigger than payload limit + this makes Mosquitto drop the connection (max_packet_size).
_PACKET_OVERHEAD_BYTES = 1024


class BrokerConfigError(RuntimeError):
    """The broker's access files cannot be written, read or applied (the message says why)."""


class AccessFileError(BrokerConfigError):
    """A password or ACL file is missing or not in the format written here."""


class TlsPaths(Protocol):
    """Certificate files of a TLS listener (hub.security.pki.TlsFiles has these fields)."""

    @property
    def ca_cert(self) -> Path: ...
    @property
    def cert(self) -> Path: ...
    @property
    def key(self) -> Path: ...


# ---- the rules ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicGrant:
    """What one user may do: publish to topics matching `write`, subscribe to filters inside
    `read` and receive messages on topics matching `read`."""

    username: str
    write: tuple[str, ...]
    read: tuple[str, ...]


def _check_name(value: str, what: str) -> str:
    if not value or any(c.isspace() or c in ":+#/\x00" for c in value):
        raise BrokerConfigError(f"{what} {value!r} cannot be used in the broker's files")
    return value


def grants_for(accounts: Iterable[BrokerAccount], site: str) -> list[TopicGrant]:
    """The topic grants of each account at `site` (the hub first, then batteries by id)."""
    _check_name(site, "site")
    grants: list[TopicGrant] = []
    for account in sorted(accounts, key=lambda a: (a.device_id is not None, a.device_id or 0)):
        _check_name(account.username, "user name")
        if account.device_id is None:
            if account.username != HUB_USERNAME:
                raise BrokerConfigError(
                    f"account {account.username!r} has no device id and is not the hub"
                )
            grants.append(TopicGrant(account.username, ("#",), ("#",)))
            continue
        device = account.device_id
        grants.append(
            TopicGrant(
                account.username,
                tuple(device_topic(site, device, leaf) for leaf in _BATTERY_WRITES),
                (*(device_topic(site, device, leaf) for leaf in _BATTERY_READS),
                 market_topic(site, "#")),
            )
        )
    return grants


def topic_matches(topic_filter: str, topic: str) -> bool:
    """True if `topic` (no wildcards) matches `topic_filter` (MQTT 3.1.1 §4.7)."""
    if topic.startswith("$") and topic_filter[:1] in ("#", "+"):
        return False
    filter_levels = topic_filter.split("/")
    levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(levels):
            return False
        if level not in ("+", levels[index]):
            return False
    return len(levels) == len(filter_levels)


def filter_covers(allowed: str, requested: str) -> bool:
    """True if every topic `requested` (a filter) can match also matches `allowed`: a
    subscription to `requested` then reads nothing `allowed` does not grant."""
    allowed_levels = allowed.split("/")
    requested_levels = requested.split("/")
    for index, level in enumerate(allowed_levels):
        if level == "#":
            return True
        if index >= len(requested_levels):
            return False
        wanted = requested_levels[index]
        if wanted == "#":
            return False
        if level == "+":
            continue
        if wanted != level:  # includes wanted == "+" under a literal level
            return False
    return len(requested_levels) == len(allowed_levels)


@dataclass(frozen=True, slots=True)
class SiteAccess:
    """The parsed password and ACL files: who may log in and what each user may do."""

    password_hashes: dict[str, str]
    grants: dict[str, TopicGrant]

    def authenticate(self, username: str | None, password: str | None) -> bool:
        """True for a known user with the right password (anonymous: always False)."""
        if not username or password is None:
            return False
        encoded = self.password_hashes.get(username)
        return encoded is not None and verify_password(password, encoded)

    def may_publish(self, username: str | None, topic: str) -> bool:
        """True if `username` may publish to `topic`."""
        grant = self.grants.get(username or "")
        return grant is not None and any(topic_matches(f, topic) for f in grant.write)

    def may_subscribe(self, username: str | None, topic_filter: str) -> bool:
        """True if `username` may subscribe to `topic_filter` (it must lie inside a read grant)."""
        grant = self.grants.get(username or "")
        return grant is not None and any(filter_covers(f, topic_filter) for f in grant.read)

    def may_receive(self, username: str | None, topic: str) -> bool:
        """True if a message on `topic` may be delivered to `username`."""
        grant = self.grants.get(username or "")
        return grant is not None and any(topic_matches(f, topic) for f in grant.read)


# ---- the files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MosquittoFiles:
    """The files `write_mosquitto_config` wrote."""

    conf: Path
    password_file: Path
    acl_file: Path


_HEADER = "# Written by etp (hub/security/broker.py) from the broker accounts: do not edit.\n"


def _password_text(accounts: Sequence[BrokerAccount]) -> str:
    lines = [_HEADER.rstrip("\n")]
    for account in accounts:
        _check_name(account.username, "user name")
        if not account.password_hash.startswith("$7$") or any(
            c.isspace() for c in account.password_hash
        ):
            raise BrokerConfigError(f"account {account.username!r}: not a $7$ password hash")
        lines.append(f"{account.username}:{account.password_hash}")
    return "\n".join(lines) + "\n"


def _acl_text(grants: Sequence[TopicGrant]) -> str:
    blocks = [_HEADER + "# One block per user; everything not listed is denied."]
    for grant in grants:
        lines = [f"user {grant.username}"]
        both = [t for t in grant.write if t in grant.read]
        lines += [f"topic readwrite {t}" for t in both]
        lines += [f"topic write {t}" for t in grant.write if t not in both]
        lines += [f"topic read {t}" for t in grant.read if t not in both]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_mosquitto_config(
    out_dir: Path,
    accounts: Sequence[BrokerAccount],
    *,
    site: str,
    listener_host: str = "127.0.0.1",
    port: int = 1883,
    tls: TlsPaths | None = None,
    max_message_bytes: int = 8192,
    pid_file: Path | None = None,
    file_mode: int = 0o640,
    write_conf: bool = True,
) -> MosquittoFiles:
    """Write `passwords`, `acl` and `mosquitto.conf` into `out_dir` (each replaced in one
    rename). The conf refuses anonymous clients, applies the ACL, drops messages larger than
    `max_message_bytes` and disconnects clients sending packets much larger; with `tls` the
    listener takes only TLS 1.2+; with `pid_file` Mosquitto writes its pid there (for
    `reload_mosquitto`). `file_mode` 0640: a Mosquitto started as root reads them as
    user mosquitto, so give `out_dir` that group with the setgid bit (chgrp mosquitto DIR;
    chmod 2750 DIR) and every rewritten file keeps it. `write_conf=False` leaves an existing
    mosquitto.conf alone (only the accounts changed)."""
    if max_message_bytes < 1:
        raise BrokerConfigError("max_message_bytes must be at least 1")
    out_dir = Path(out_dir)
    grants = grants_for(accounts, site)
    by_name = {a.username: a for a in accounts}
    if len(by_name) != len(accounts):
        raise BrokerConfigError("two broker accounts have the same user name")
    ordered = [by_name[g.username] for g in grants]
    files = MosquittoFiles(out_dir / CONF_FILE, out_dir / PASSWORD_FILE, out_dir / ACL_FILE)
    write_atomically(files.password_file, _password_text(ordered).encode(), file_mode)
    write_atomically(files.acl_file, _acl_text(grants).encode(), file_mode)
    if not write_conf:
        return files
    conf = [
        _HEADER.rstrip("\n"),
        "# Run: mosquitto -c THIS_FILE ; after `etp device add/revoke/rotate` the hub rewrites",
        "# passwords and acl; a SIGHUP (the hub sends it when ETP_MOSQUITTO_PID_FILE is set)",
        "# makes Mosquitto read them again.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {files.password_file.resolve()}",
        f"acl_file {files.acl_file.resolve()}",
        f"message_size_limit {max_message_bytes}",
        f"max_packet_size {max_message_bytes + _PACKET_OVERHEAD_BYTES}",
    ]
    if pid_file is not None:
        conf.append(f"pid_file {Path(pid_file).resolve()}")
    conf += [
        f"listener {port} {listener_host}",
        # Listener options come after `listener` (before it they open a default listener
        # on port 1883 on every interface).
        "# Each login's client id is its user name: a battery cannot take over the session",
        "# of the hub or of another battery by sending that client's id.",
        "use_username_as_clientid true",
    ]
    if tls is not None:
        conf += [
            f"cafile {Path(tls.ca_cert).resolve()}",
            f"certfile {Path(tls.cert).resolve()}",
            f"keyfile {Path(tls.key).resolve()}",
            "tls_version tlsv1.2",
        ]
    write_atomically(files.conf, ("\n".join(conf) + "\n").encode(), file_mode)
    return files


def _parse_password_file(path: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, encoded = line.partition(":")
        if not sep or not username or not encoded.startswith("$7$"):
            raise AccessFileError(f"{path}:{number}: expected user:$7$... (a Mosquitto hash)")
        hashes[username] = encoded
    return hashes


def _parse_acl_file(path: Path) -> dict[str, TopicGrant]:
    writes: dict[str, list[str]] = {}
    reads: dict[str, list[str]] = {}
    user: str | None = None
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "user" and len(words) == 2:
            user = words[1]
            writes.setdefault(user, [])
            reads.setdefault(user, [])
            continue
        if words[0] == "topic" and user is not None and len(words) in (2, 3):
            access, topic = ("readwrite", words[1]) if len(words) == 2 else (words[1], words[2])
            if access not in ("read", "write", "readwrite"):
                raise AccessFileError(f"{path}:{number}: access must be read, write or readwrite")
            if access != "read":
                writes[user].append(topic)
            if access != "write":
                reads[user].append(topic)
            continue
        raise AccessFileError(
            f"{path}:{number}: expected `user NAME` or `topic read|write|readwrite TOPIC` "
            "after a user line"
        )
    return {name: TopicGrant(name, tuple(writes[name]), tuple(reads[name])) for name in writes}


def accounts_from_password_file(path: Path) -> list[BrokerAccount]:
    """The accounts in a password file written here (user `bess-N` is battery N)."""
    accounts = []
    for username, encoded in _parse_password_file(path).items():
        device = username.removeprefix("bess-")
        device_id = int(device) if device != username and device.isdigit() else None
        accounts.append(BrokerAccount(username, encoded, device_id))
    return accounts


def read_site_access(password_file: Path, acl_file: Path) -> SiteAccess:
    """Parse a password file and an ACL file written by `write_mosquitto_config`."""
    try:
        return SiteAccess(_parse_password_file(password_file), _parse_acl_file(acl_file))
    except OSError as exc:
        raise AccessFileError(f"cannot read the broker's access files: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise AccessFileError(f"broker access file is not text: {exc}") from exc


_DENY_ALL = SiteAccess({}, {})


class ReloadingAccess:
    """The rules in a password and an ACL file, read again when either changes.

    `current()` looks at the files at most once per `interval_s` (stat only; it parses them
    again when their inode, size or mtime changed), so a revoked account is refused within
    about a second. If the files become unreadable or malformed, everyone is refused (fail
    closed) until they are fixed."""

    def __init__(
        self,
        password_file: Path,
        acl_file: Path,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.password_file = Path(password_file)
        self.acl_file = Path(acl_file)
        self._interval_s = interval_s
        self._clock = clock
        self._stamp = self._file_stamp()
        self._access = read_site_access(self.password_file, self.acl_file)  # raises at start
        self._checked_at = clock()
        self.reloads = 0

    def _file_stamp(self) -> tuple[tuple[int, int, int], ...] | None:
        try:
            stats = [p.stat() for p in (self.password_file, self.acl_file)]
        except OSError:
            return None
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def current(self) -> SiteAccess:
        """The rules in force now."""
        now = self._clock()
        if now - self._checked_at < self._interval_s:
            return self._access
        self._checked_at = now
        stamp = self._file_stamp()
        if stamp == self._stamp and stamp is not None:
            return self._access
        self._stamp = stamp
        try:
            self._access = read_site_access(self.password_file, self.acl_file)
        except AccessFileError as exc:
            log.error("broker access files unusable: refusing every client", error=str(exc))
            self._access = _DENY_ALL
        else:
            self.reloads += 1
            log.info("broker access files reloaded", users=len(self._access.password_hashes))
        return self._access


# ---- applying them -----------------------------------------------------------------------


def reload_mosquitto(pid_file: Path) -> None:
    """Make the Mosquitto whose pid is in `pid_file` read its password and ACL files again
    (SIGHUP). Mosquitto 2.0 then also closes clients whose account went or whose password
    changed (see the module docstring)."""
    try:
        pid = int(Path(pid_file).read_text().strip())
    except FileNotFoundError:
        raise BrokerConfigError(
            f"Mosquitto pid file {pid_file} does not exist: is Mosquitto running with "
            "`pid_file` set to it (ETP_MOSQUITTO_PID_FILE)?"
        ) from None
    except (OSError, ValueError) as exc:
        raise BrokerConfigError(f"cannot read a pid from {pid_file}: {exc}") from exc
    if pid <= 1:
        raise BrokerConfigError(f"{pid_file} holds no usable pid ({pid})")
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        raise BrokerConfigError(
            f"no process {pid} (from {pid_file}): Mosquitto is not running"
        ) from None
    except PermissionError:
        raise BrokerConfigError(
            f"not allowed to signal Mosquitto (pid {pid}): run the hub as Mosquitto's user "
            "or root, or send SIGHUP yourself"
        ) from None


def broker_config_dir(settings: Settings) -> Path:
    """Where the broker's access files live: ETP_BROKER_CONFIG_DIR, else data_dir/broker."""
    return settings.broker_config_dir or settings.data_dir / "broker"


def hub_broker_password(data_dir: Path) -> str | None:
    """The hub's own broker password (data_dir/broker-hub.password), None if not made yet."""
    path = Path(data_dir) / HUB_PASSWORD_FILE
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BrokerConfigError(f"cannot read the hub's broker password {path}: {exc}") from exc
    return text or None


@dataclass(frozen=True, slots=True)
class BrokerTlsFiles:
    """The broker's certificate files in data_dir/pki, as `etp pki init` names them."""

    ca_cert: Path
    cert: Path
    key: Path

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> BrokerTlsFiles:
        """data_dir/pki/{ca.crt,broker.crt,broker.key} (they may not exist yet)."""
        pki = Path(data_dir) / "pki"
        return cls(pki / "ca.crt", pki / "broker.crt", pki / "broker.key")

    def missing(self) -> list[Path]:
        """The files that do not exist."""
        return [p for p in (self.ca_cert, self.cert, self.key) if not p.exists()]


def _site_tls(settings: Settings) -> TlsPaths | None:
    """The broker's certificate from data_dir/pki (etp pki init), for an mqtts:// broker."""
    from hub.transport.broker import is_tls_url

    if settings.mqtt_url is None or not is_tls_url(settings.mqtt_url):
        return None
    files = BrokerTlsFiles.in_data_dir(settings.data_dir)
    return None if files.missing() else files


def apply_site_access(settings: Settings, accounts: Sequence[BrokerAccount]) -> MosquittoFiles:
    """Write the broker's access files for `accounts` (after a device is added, revoked or
    given a new password) and make the running broker use them.

    The password and ACL files go to ETP_BROKER_CONFIG_DIR (default data_dir/broker), with a
    mosquitto.conf if there is none yet (an existing one, e.g. from `etp broker config
    --host ... --tls`, is kept: its listener is the operator's choice). An external Mosquitto
    the hub manages is sent SIGHUP when ETP_MOSQUITTO_PID_FILE is set; the embedded broker
    notices the changed files by itself within about a second."""
    from hub.transport.broker import parse_mqtt_url

    directory = broker_config_dir(settings)
    first_accounts = not (directory / PASSWORD_FILE).exists()
    if settings.mqtt_url is not None:
        host, port = parse_mqtt_url(settings.mqtt_url)
    else:
        host, port = settings.mqtt_host, settings.mqtt_port
    files = write_mosquitto_config(
        directory,
        accounts,
        site=settings.site,
        listener_host=host,
        port=port,
        tls=_site_tls(settings),
        max_message_bytes=settings.broker_max_message_bytes,
        pid_file=settings.mosquitto_pid_file,
        write_conf=not (directory / CONF_FILE).exists(),
    )
    if settings.mosquitto_pid_file is not None:
        reload_mosquitto(settings.mosquitto_pid_file)
    log.info("broker access applied", accounts=len(accounts), directory=str(files.conf.parent))
    if settings.embedded_broker and first_accounts and settings.broker_locked is None:
        log.warning(
            "the site now has broker accounts: restart the hub to lock its embedded broker "
            "(a hub already running keeps it open until then)"
        )
    return files


@dataclass(frozen=True, slots=True)
class EmbeddedLock:
    """The files the embedded broker's authentication and topic-ACL plugins read."""

    password_file: Path
    acl_file: Path


def embedded_locked(settings: Settings) -> tuple[bool, bool]:
    """(locked, access files present) of the embedded broker: ETP_BROKER_LOCKED if set,
    else locked once the site's access files exist."""
    directory = broker_config_dir(settings)
    present = (directory / PASSWORD_FILE).exists() and (directory / ACL_FILE).exists()
    return (present if settings.broker_locked is None else settings.broker_locked), present


def embedded_lock(settings: Settings) -> EmbeddedLock | None:
    """Whether the embedded broker is locked, and by which files (logged either way).

    ETP_BROKER_LOCKED=true: locked (the access files must exist); false: open; unset: locked
    as soon as the site has broker accounts (the access files exist, written by `etp device
    add`), open before that (a fresh demo on loopback)."""
    directory = broker_config_dir(settings)
    lock = EmbeddedLock(directory / PASSWORD_FILE, directory / ACL_FILE)
    locked, present = embedded_locked(settings)
    if not locked:
        # here, not at the top: hub.security.tls imports hub.transport.broker, which imports this
        from hub.security.tls import is_loopback_host

        loopback = is_loopback_host(settings.mqtt_host)
        (log.info if loopback else log.warning)(
            "embedded broker is OPEN: any client reaching it may publish and subscribe anywhere",
            listener=f"{settings.mqtt_host}:{settings.mqtt_port}",
            why="ETP_BROKER_LOCKED=false"
            if settings.broker_locked is False
            else "no broker accounts yet (etp device add creates them)",
        )
        return None
    if not present:
        raise BrokerConfigError(
            f"ETP_BROKER_LOCKED is set but {lock.password_file} / {lock.acl_file} do not exist: "
            "add a device (etp device add) or write them with `etp broker config --out "
            f"{directory}`"
        )
    read_site_access(lock.password_file, lock.acl_file)  # malformed files: fail at start
    log.info("embedded broker locked: accounts and topic ACL", directory=str(directory))
    return lock
