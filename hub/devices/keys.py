"""Device keys on the hub: a keyring deriving key_N on demand, and per-identity senders."""

from __future__ import annotations

from shared_etp.frame import Keyring, Sender, derive_key

__all__ = ["DeviceKeyring", "SenderPool"]

# Device ids double as key ids, which are 16-bit on the wire (shared_etp/README.md).
MAX_DEVICE_ID = 0xFFFF


class DeviceKeyring(Keyring):
    """Holds the site master secret; key id N (1..MAX_DEVICE_ID) is device N's key, used only
    by src N.

    Frames the hub receives come from devices, so kid N is bound to owner N.
    """

    def __init__(self, master_secret: bytes) -> None:
        super().__init__()
        self._master = bytes(master_secret)
        self._cache: dict[int, bytes] = {}

    def device_key(self, device_id: int) -> bytes:
        """key_N = derive_key(master, N), cached."""
        key = self._cache.get(device_id)
        if key is None:
            key = self._cache[device_id] = derive_key(self._master, device_id)
        return key

    def key_for(self, kid: int, src: int) -> bytes | None:  # type: ignore[override]
        """Device key for kid if src is that device; None otherwise."""
        if 1 <= kid <= MAX_DEVICE_ID and src == kid:
            return self.device_key(kid)
        return None

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, int) and 1 <= kid <= MAX_DEVICE_ID


class SenderPool:
    """One Sender per (src, device): the hub (src 0) and each aggregator sign frames to device N
    with key_N, and each pair keeps its own sequence so the device's replay window stays exact."""

    def __init__(self, keyring: DeviceKeyring, epoch: int) -> None:
        self.keyring = keyring
        self.epoch = epoch
        self._senders: dict[tuple[int, int], Sender] = {}

    def get(self, src: int, device_id: int) -> Sender:
        """The sender for frames from src to device_id."""
        sender = self._senders.get((src, device_id))
        if sender is None:
            sender = Sender(src, device_id, self.keyring.device_key(device_id), self.epoch)
            self._senders[(src, device_id)] = sender
        return sender
