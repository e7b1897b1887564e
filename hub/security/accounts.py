"""Who may use the site's broker: the one source of truth both brokers are configured from.

The hub is the only client that publishes requests and market notices and the only one that
subscribes to the whole site; each battery logs in as `bess-<id>` and may use only its own
topics. Passwords are kept only as hashes in Mosquitto 2's format (`$7$`: PBKDF2-SHA512, the
salt and digest base64), which Mosquitto reads from its password file and the embedded
broker's authentication plugin checks with `verify_password`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = [
    "HUB_USERNAME",
    "BrokerAccount",
    "device_username",
    "hash_password",
    "new_password",
    "verify_password",
]

HUB_USERNAME = "hub"
_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_SALT_BYTES = 12


@dataclass(frozen=True, slots=True)
class BrokerAccount:
    """One broker login: the hub (device_id None) or battery `device_id`."""

    username: str
    password_hash: str
    device_id: int | None = None


def device_username(device_id: int) -> str:
    """The broker user name of battery `device_id`."""
    return f"bess-{device_id}"


def new_password() -> str:
    """A fresh random broker password (URL-safe, 192 bits)."""
    return secrets.token_urlsafe(24)


def hash_password(
    password: str, *, salt: bytes | None = None, iterations: int = _ITERATIONS
) -> str:
    """`$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>`, as mosquitto_passwd writes it."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches a `$7$` hash (False for any other or malformed hash)."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != "7" or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    iterations = int(parts[2])
    if not 1 <= iterations <= 1_000_000:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return hmac.compare_digest(digest, expected)
