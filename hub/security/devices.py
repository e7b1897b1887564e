"""Device provisioning: a battery's credentials (key generation, broker password, owner) and
the config bundle a board is flashed with; the broker accounts of the site.

A bundle is a directory (0700) holding `etp_config.json` exactly as `etp firmware flash`
writes it to a board (device key of the current generation, its own notice key, site, broker URL,
broker user `bess-<id>` and password, `mqtt_ca_file` when the site has a CA) and, then,
`mqtt_ca.crt`; every file 0600. The broker password exists only there: the store keeps its
`$7$` hash. Nothing here logs a secret.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.devices.keys import generation_key
from hub.security.accounts import (
    HUB_USERNAME,
    BrokerAccount,
    device_username,
    hash_password,
    new_password,
)
from hub.security.broker import HUB_PASSWORD_FILE, apply_site_access
from shared_etp.frame import derive_notice_key

if TYPE_CHECKING:
    from hub.settings import Settings
    from hub.store import Store

__all__ = [
    "BUNDLE_CA_FILE",
    "BUNDLE_CONFIG_FILE",
    "OwnerError",
    "apply_broker_access",
    "broker_accounts",
    "bundle_config",
    "ensure_hub_broker_password",
    "parse_owner",
    "prepare_bundle_dir",
    "site_ca_file",
    "write_bundle",
]

BUNDLE_CONFIG_FILE = "etp_config.json"


class BundleError(ValueError):
    """A device bundle that cannot be used (the message says why and what to run)."""


def read_bundle(path: Path) -> tuple[dict[str, Any], Path | None]:
    """A device bundle written by `etp device add` (its directory, or its config file): the
    board's config and the CA file it names, if any."""
    config_path = path / BUNDLE_CONFIG_FILE if path.is_dir() else path
    if not config_path.is_file():
        raise BundleError(f"--bundle {path} has no {BUNDLE_CONFIG_FILE} (make one with "
                          "`etp device add N`)")
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"{config_path} is not a readable JSON config: {exc}") from None
    if not isinstance(config, dict) or not isinstance(config.get("device_id"), int):
        raise BundleError(f"{config_path} is not a device config (no device_id)")
    ca_file = None
    if config.get("mqtt_ca_file"):
        ca_file = config_path.parent / str(config["mqtt_ca_file"])
        if not ca_file.is_file():
            raise BundleError(f"the bundle's config names {config['mqtt_ca_file']} but "
                              f"{ca_file} is missing")
    return config, ca_file
BUNDLE_CA_FILE = "mqtt_ca.crt"  # the name `etp firmware flash` gives the CA on the board

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


class OwnerError(ValueError):
    """An owner that is not a base58 Solana public key (32 bytes)."""


def parse_owner(text: str) -> str:
    """Check a Solana public key in base58 (32 bytes once decoded); returns it unchanged."""
    text = text.strip()
    if not 32 <= len(text) <= 44:
        raise OwnerError(f"owner {text!r} is not a Solana public key (32 to 44 base58 chars)")
    number = 0
    for char in text:
        digit = _BASE58.find(char)
        if digit < 0:
            raise OwnerError(f"owner has {char!r}, not a base58 character")
        number = number * 58 + digit
    leading_zeros = len(text) - len(text.lstrip("1"))
    size = leading_zeros + (number.bit_length() + 7) // 8
    if size != 32:
        raise OwnerError(f"owner decodes to {size} bytes; a Solana public key has 32")
    return text


def site_ca_file(settings: Settings) -> Path | None:
    """The site CA certificate (`etp pki init`), if there is one."""
    path = settings.data_dir / "pki" / "ca.crt"
    return path if path.is_file() else None


def bundle_config(
    settings: Settings,
    master_secret: bytes,
    device_id: int,
    key_generation: int,
    broker_password: str,
    *,
    mqtt_url: str | None = None,
    with_ca: bool = False,
) -> dict[str, object]:
    """The board's etp_config.json for this battery and key generation."""
    config: dict[str, object] = {
        "device_id": device_id,
        "site": settings.site,
        "key": generation_key(master_secret, device_id, key_generation).hex(),
        "mqtt_url": mqtt_url or settings.resolved_mqtt_url(),
        "notice_key": bytes(derive_notice_key(master_secret, device_id)).hex(),  # its own
        "mqtt_user": device_username(device_id),
        "mqtt_password": broker_password,
    }
    if with_ca:
        config["mqtt_ca_file"] = BUNDLE_CA_FILE
    return config


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def prepare_bundle_dir(directory: Path) -> Path:
    """Create the bundle directory 0700 (refusing one that holds files: a bundle is never
    overwritten in place); returns it resolved."""
    directory = directory.expanduser().resolve()
    if directory.exists():
        if not directory.is_dir():
            raise FileExistsError(f"{directory} exists and is not a directory")
        if any(directory.iterdir()):
            raise FileExistsError(f"{directory} is not empty: choose another --out")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    return directory


def write_bundle(directory: Path, config: dict[str, object], ca_file: Path | None) -> None:
    """Write etp_config.json (and the CA certificate) 0600 into a prepared directory."""
    _write_private(directory / BUNDLE_CONFIG_FILE, json.dumps(config).encode())
    if ca_file is not None:
        _write_private(directory / BUNDLE_CA_FILE, ca_file.read_bytes())


def ensure_hub_broker_password(data_dir: Path) -> str:
    """The hub's own broker password: made on first use, kept 0600 in
    data_dir/broker-hub.password (hub.security.broker.hub_broker_password only reads it)."""
    path = data_dir / HUB_PASSWORD_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            _write_private(path, (new_password() + "\n").encode())
        except FileExistsError:
            pass  # another process made it first: use theirs
    return path.read_text().strip()


async def broker_accounts(store: Store, settings: Settings | None = None) -> list[BrokerAccount]:
    """Every broker login of the site: the hub, then each active provisioned battery."""
    if settings is None:
        from hub.settings import Settings

        settings = Settings()
    hub_password = ensure_hub_broker_password(settings.data_dir)
    accounts = [BrokerAccount(HUB_USERNAME, hash_password(hub_password))]
    for row in await store.list_device_credentials(settings.site):
        if row.active:
            accounts.append(
                BrokerAccount(
                    device_username(row.device_id), row.broker_password_hash, row.device_id
                )
            )
    return accounts


async def apply_broker_access(store: Store, settings: Settings) -> str | None:
    """Give the configured broker the site's accounts (hub.security.broker). Returns a
    problem to show the user, or None."""
    try:
        apply_site_access(settings, await broker_accounts(store, settings))
    except Exception as exc:
        return f"the broker's accounts were not updated: {exc}"
    return None
