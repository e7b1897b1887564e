"""Devices: the registry (births, status, liveness, failures) and the per-device keys."""

from hub.devices.keys import DeviceKeyring, DeviceReceiver, SenderPool, generation_key
from hub.devices.registry import Device, Registry

__all__ = ["Device", "DeviceKeyring", "DeviceReceiver", "Registry", "SenderPool", "generation_key"]
