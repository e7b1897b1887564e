"""Legacy bridge: batteries of the Go prototype trade in the ETP market (see README.md)."""

from hub.legacy.bridge import (
    LEGACY_DEVICE_IDS,
    BridgeConfig,
    BridgedBattery,
    LegacyBridge,
    LegacyTarget,
    is_legacy_device,
)
from hub.legacy.double import DoubleConfig, LegacyBatteryDouble
from hub.legacy.wire import LegacyStream

__all__ = [
    "LEGACY_DEVICE_IDS",
    "BridgeConfig",
    "BridgedBattery",
    "DoubleConfig",
    "LegacyBatteryDouble",
    "LegacyBridge",
    "LegacyStream",
    "LegacyTarget",
    "is_legacy_device",
]
