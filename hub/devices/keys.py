"""Device keys on the hub: a keyring deriving each battery's key of its current generation,
refusing revoked (and, if required, unprovisioned) batteries, and per-identity senders that
sign with the key the battery is known to use.

Key generations (shared_etp/README.md, "Frames"): generation 0 is derive_key(master, N), what
an unprovisioned board holds; `etp device rotate N` moves N to the next generation, whose key
is generation_key(master, N, g). For ETP_ROTATION_GRACE_S after a rotation the previous
generation is still accepted, so a board not yet given its new bundle keeps trading.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from shared_etp.compat import digests_equal, hmac_sha256
from shared_etp.errors import BAD_TAG, UNKNOWN_KEY, ProtocolError
from shared_etp.frame import Keyring, Receiver, Sender, check_fresh, derive_key, parse_frame

__all__ = [
    "REVOKED",
    "CredentialLike",
    "DeviceKeyring",
    "DeviceReceiver",
    "KeyringChange",
    "SenderPool",
    "generation_key",
]

# Device ids double as key ids, which are 16-bit on the wire (shared_etp/README.md).
MAX_DEVICE_ID = 0xFFFF
# The rejection reason of a frame from a revoked battery (counted with the protocol's codes).
REVOKED = "revoked"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def generation_key(master_secret: bytes, device_id: int, generation: int) -> bytes:
    """Device N's HMAC key of key generation g: derive_key(master, N) for g = 0 (what every
    board had before provisioning), HMAC-SHA256(master, "etp/v1/key/<N>/gen/<g>") after.

    The labels never collide (a generation-0 label has no "/gen/"), and a key of one
    generation tells nothing about another's: a leaked old key is useless after rotation.
    """
    if generation < 0:
        raise ValueError("a key generation is 0 or more")
    if generation == 0:
        return bytes(derive_key(master_secret, device_id))
    return bytes(
        hmac_sha256(bytes(master_secret), b"etp/v1/key/%d/gen/%d" % (device_id, generation))
    )


class CredentialLike(Protocol):
    """What the keyring reads of a stored credential (hub.store.DeviceCredentialRow)."""

    @property
    def device_id(self) -> int: ...
    @property
    def state(self) -> str: ...
    @property
    def key_generation(self) -> int: ...
    @property
    def rotated_ms(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class _Credential:
    generation: int
    revoked: bool
    previous_until_ms: int  # the previous generation is accepted until then (wall ms); 0: no


@dataclass(frozen=True, slots=True)
class KeyringChange:
    """What a reload changed: batteries newly revoked, and batteries given a new generation."""

    revoked: tuple[int, ...] = ()
    rotated: tuple[int, ...] = ()


class DeviceKeyring(Keyring):
    """Holds the site master secret; key id N (1..MAX_DEVICE_ID) is device N's key, used only
    by src N (frames the hub receives come from devices, so kid N is bound to owner N).

    Provisioned batteries (load()) use their current key generation, and the previous one for
    `grace_ms` after a rotation; revoked ones are refused (reason REVOKED); with
    `require_provisioning` a battery that was never provisioned is refused (unknown_key),
    without it it uses generation 0 as before provisioning existed.
    """

    def __init__(
        self,
        master_secret: bytes,
        *,
        require_provisioning: bool = False,
        grace_ms: int = 300_000,
        clock: Callable[[], int] = _wall_ms,
    ) -> None:
        super().__init__()
        self._master = bytes(master_secret)
        self.require_provisioning = require_provisioning
        self.grace_ms = grace_ms
        self.clock = clock
        self._cache: dict[tuple[int, int], bytes] = {}
        self._credentials: dict[int, _Credential] = {}
        self._in_use: dict[int, int] = {}  # device -> newest generation verified from it
        self.loaded = False

    # ---- keys ------------------------------------------------------------------------------

    def generation_key(self, device_id: int, generation: int) -> bytes:
        """Device N's key of a generation, cached."""
        key = self._cache.get((device_id, generation))
        if key is None:
            key = self._cache[(device_id, generation)] = generation_key(
                self._master, device_id, generation
            )
        return key

    def device_key(self, device_id: int) -> bytes:
        """Device N's key of its current generation (0 if never provisioned)."""
        credential = self._credentials.get(device_id)
        return self.generation_key(device_id, credential.generation if credential else 0)

    def generation(self, device_id: int) -> int | None:
        """The current key generation of a provisioned battery (None: not provisioned)."""
        credential = self._credentials.get(device_id)
        return credential.generation if credential else None

    def is_revoked(self, device_id: int) -> bool:
        """True if the battery's credentials were revoked."""
        credential = self._credentials.get(device_id)
        return credential is not None and credential.revoked

    def provisioned(self) -> list[int]:
        """The provisioned batteries whose credentials are active."""
        return [device for device, cred in self._credentials.items() if not cred.revoked]

    # ---- the credentials table -------------------------------------------------------------

    def load(self, rows: Iterable[CredentialLike]) -> KeyringChange:
        """Replace the provisioned batteries with `rows` (the site's credentials table)."""
        fresh: dict[int, _Credential] = {}
        for row in rows:
            rotated = row.rotated_ms
            fresh[row.device_id] = _Credential(
                generation=row.key_generation,
                revoked=row.state != "active",
                previous_until_ms=(
                    rotated + self.grace_ms
                    if rotated is not None and row.key_generation > 0 and self.grace_ms > 0
                    else 0
                ),
            )
        old = self._credentials
        revoked = tuple(
            sorted(n for n, c in fresh.items() if c.revoked and not (n in old and old[n].revoked))
        )
        rotated_ids = tuple(
            sorted(
                n
                for n, c in fresh.items()
                if not c.revoked and n in old and old[n].generation != c.generation
            )
        )
        self._credentials = fresh
        self.loaded = True
        for device_id in list(self._in_use):
            credential = fresh.get(device_id)
            if credential is None or self._in_use[device_id] > credential.generation:
                del self._in_use[device_id]
        return KeyringChange(revoked, rotated_ids)

    # ---- receiving -------------------------------------------------------------------------

    def _accepted(self, kid: int, src: int) -> tuple[tuple[int, bytes], ...]:
        """(generation, key) pairs a frame with this kid and src may be signed with."""
        if not 1 <= kid <= MAX_DEVICE_ID or src != kid:
            raise ProtocolError(UNKNOWN_KEY, "kid %d src %d" % (kid, src))
        credential = self._credentials.get(kid)
        if credential is None:
            if self.require_provisioning:
                raise ProtocolError(UNKNOWN_KEY, "device %d is not provisioned" % kid)
            return ((0, self.generation_key(kid, 0)),)
        if credential.revoked:
            raise ProtocolError(REVOKED, "device %d is revoked" % kid)
        current = (credential.generation, self.generation_key(kid, credential.generation))
        if credential.previous_until_ms and self.clock() < credential.previous_until_ms:
            previous = credential.generation - 1
            return (current, (previous, self.generation_key(kid, previous)))
        return (current,)

    def verify(self, frame: bytes) -> tuple[dict[str, Any], int]:
        """Decode and authenticate a frame from a battery: (message, key generation that
        verified it). Raises ProtocolError (unknown_key, revoked, bad_tag, or a decoding code)."""
        msg, body, tag = parse_frame(frame)
        for generation, key in self._accepted(msg["kid"], msg["src"]):
            if digests_equal(hmac_sha256(key, body), tag):
                return msg, generation
        raise ProtocolError(BAD_TAG, "bad tag")

    def key_for(self, kid: int, src: int) -> bytes | None:  # type: ignore[override]
        """The current key for kid if src is that device and may send; None otherwise."""
        try:
            return self._accepted(kid, src)[0][1]
        except ProtocolError:
            return None

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, int) and 1 <= kid <= MAX_DEVICE_ID

    # ---- sending ---------------------------------------------------------------------------

    def note_in_use(self, device_id: int, generation: int) -> None:
        """A fresh frame from the battery verified under `generation`: it holds that key now
        (generations only grow, so a late frame of an older one changes nothing)."""
        if generation > self._in_use.get(device_id, -1):
            self._in_use[device_id] = generation

    def signing_generation(self, device_id: int) -> int:
        """The generation the hub signs frames to the battery with: the newest it was seen
        using while that is still accepted; before any, the previous one during a rotation's
        grace window (the battery may not have its new bundle yet), else the current one."""
        credential = self._credentials.get(device_id)
        if credential is None:
            return 0
        in_grace = bool(credential.previous_until_ms) and (
            self.clock() < credential.previous_until_ms
        )
        used = self._in_use.get(device_id)
        if used == credential.generation or (in_grace and used == credential.generation - 1):
            return used
        return credential.generation - 1 if in_grace else credential.generation

    def signing_key(self, device_id: int) -> bytes:
        """The key of signing_generation(device_id)."""
        return self.generation_key(device_id, self.signing_generation(device_id))


class DeviceReceiver(Receiver):  # type: ignore[misc]
    """The hub's Receiver: frames are authenticated by a DeviceKeyring (any generation it
    accepts), and a frame that passes every check tells the keyring which key its battery
    holds."""

    keyring: DeviceKeyring

    def __init__(self, keyring: DeviceKeyring, **kwargs: Any) -> None:
        super().__init__(keyring, **kwargs)

    def open(self, frame: bytes, now: int | None = None) -> dict[str, Any]:
        """Return the authenticated, fresh, first-seen message, or raise ProtocolError."""
        try:
            msg, generation = self.keyring.verify(frame)
            check_fresh(msg, self.clock() if now is None else now, self.max_skew_ms)
            self.replay.check(msg["src"], msg["ep"], msg["seq"])
        except ProtocolError as exc:
            self.rejected[exc.code] = self.rejected.get(exc.code, 0) + 1
            raise
        self.accepted += 1
        self.keyring.note_in_use(msg["src"], generation)
        return msg


class SenderPool:
    """One Sender per (src, device): the hub (src 0) and each aggregator sign frames to device N
    with N's key, and each pair keeps its own sequence so the device's replay window stays
    exact. The key is the one the battery holds (DeviceKeyring.signing_key): after a rotation
    the old one until a frame under the new one arrives."""

    def __init__(self, keyring: DeviceKeyring, epoch: int) -> None:
        self.keyring = keyring
        self.epoch = epoch
        self._senders: dict[tuple[int, int], Sender] = {}
        self._device_epochs: dict[int, int] = {}  # batteries taken over: their own epoch

    def restart(self, device_ids: set[int], now_s: int) -> None:
        """Hub workers: these batteries were taken over from another worker, which signed to
        them under its own epoch (its start time, or later). Frames to them start again at
        an epoch above it (the wall clock now, in seconds), so the battery's replay window
        accepts them and refuses anything the old owner still sends."""
        for key in [k for k in self._senders if k[1] in device_ids]:
            del self._senders[key]
        for device_id in device_ids:
            last = self._device_epochs.get(device_id, self.epoch)
            self._device_epochs[device_id] = max(self.epoch, now_s, last + 1) & 0xFFFFFFFF

    def get(self, src: int, device_id: int) -> Sender:
        """The sender for frames from src to device_id."""
        key = self.keyring.signing_key(device_id)
        sender = self._senders.get((src, device_id))
        if sender is None:
            epoch = self._device_epochs.get(device_id, self.epoch)
            sender = Sender(src, device_id, key, epoch)
            self._senders[(src, device_id)] = sender
        elif sender.key != key:
            sender.key = key
        return sender
