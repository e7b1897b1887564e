"""Device registry: births, status, liveness by deadline and last will, device failures."""

from hub.registry.keys import DeviceKeyring, SenderPool
from hub.registry.registry import Device, Registry

__all__ = ["Device", "DeviceKeyring", "Registry", "SenderPool"]
