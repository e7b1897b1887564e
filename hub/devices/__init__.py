"""Devices: the registry (births, status, liveness, failures) and the per-device keys."""

from hub.devices.keys import DeviceKeyring, SenderPool
from hub.devices.registry import Device, Registry

__all__ = ["Device", "DeviceKeyring", "Registry", "SenderPool"]
