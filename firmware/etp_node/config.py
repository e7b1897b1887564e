"""Node configuration: one dict of defaults plus a JSON override file on flash.

Keys (units in the name where a value has one) are documented in firmware/README.md. Binary
keys (`key`, `notice_key`) are stored hex-encoded in the file and decoded to bytes here.
"""

import json

CONFIG_FILE = "etp_config.json"

DEFAULTS = {
    "device_id": 1,
    "site": "site1",
    "key": b"",  # this device's HMAC key, derive_key(master, device_id)
    "notice_key": b"",  # this board's market notice key, signing.derive_notice_key(master, id)
    "mqtt_url": "mqtt://127.0.0.1:1883",
    "mqtt_keepalive_s": 30,
    "mqtt_user": "",
    "mqtt_password": "",
    "mqtt_ca_file": "",  # PEM file on flash: verify the broker's TLS certificate against it
    "reserve_mc": 20000,  # static reserve price, milli-cents/kWh
    "pct_for_sale": 8000,  # share of the remaining energy for sale, 1/100 %
    "floor_wh": 500,  # energy never sold (kept for the owner), Wh
    "dynamic_reserve": True,  # raise the reserve with scarcity and recent clearing prices
    "scarcity_gain_pct": 50,  # reserve premium when the last sellable Wh goes, percent
    "market_weight_pct": 50,  # how far the reserve moves toward recent clearing prices
    "hold_timeout_ms": 3000,  # unconfirmed BidAccept holds are released after this
    "min_reputation": 2000,  # bidders below this score (1/100 %) are rejected
    "status_interval_ms": 5000,  # periodic BESSStatus
    "delivery_s": 900,  # a confirmed trade is discharged over this many seconds
    "capacity_wh": 10000,  # battery model: usable capacity, Wh
    "charge_w": 0,  # battery model: the site's charger (PV/grid), W; 0 = none
    "soc_start": 9000,  # battery model: initial state of charge, 1/100 %
    "cells_series": 14,  # battery model: cells in series (14s Li-ion ~ 51.8 V nominal)
    "min_cell_mv": 2800,  # fault below this cell voltage
    "max_cell_mv": 4250,  # fault above this cell voltage
    "fault_file": "etp_fault",  # simulation: a file on flash naming a fault to inject
    "audit_dir": "audit",
    "audit_file_bytes": 16384,  # one audit file (segment) at most this size
    "audit_files": 4,  # bid ring: rotated files kept
    "audit_flash_pct": 50,  # the whole trail: this % of the free flash (trade ring: the rest)
    "audit_max_kb": 2048,  # ... and at most this many KB
    "audit_trade_files": 0,  # trade ring segments; 0: sized from the free flash at boot
    "adc_pins": None,  # board layer: {"volt": pin, "current": pin}
    "adc_scale": None,  # board layer: {"volt": mV per count, "current": mA per count}
    "seed": 1,
}

_HEX_KEYS = ("key", "notice_key")
# Keys a config may set that are not in DEFAULTS (read with their default where used): each
# entry of the config dict a board keeps is heap, and a 64K board over TLS is at its limit.
# epoch: the node's boot epoch; cell_uohm (2000: internal resistance of one series cell group,
# micro-ohm) and max_discharge_a (100: the pack's discharge current limit, A): the board layer
# (AdcBattery; the simulator uses its model); clock_offset_ms (simulation: the port's clock
# plus this, e.g. back to 2000-01-01 as a board without a real-time clock starts).
_OPTIONAL = ("epoch", "cell_uohm", "max_discharge_a", "clock_offset_ms")


class ConfigError(ValueError):
    """The config file on flash is unreadable or names an unknown key."""


def _decode(values):
    out = {}
    for name, value in values.items():
        if name not in DEFAULTS and name not in _OPTIONAL:
            raise ConfigError("unknown config key %r in %s: remove or fix it" % (name, CONFIG_FILE))
        if name in _HEX_KEYS and isinstance(value, str):
            value = bytes(int(value[i : i + 2], 16) for i in range(0, len(value), 2))
        out[name] = value
    return out


def load(path=CONFIG_FILE, overrides=None):
    """Defaults, then the JSON file at path (if present), then overrides; returns a new dict."""
    config = dict(DEFAULTS)
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        text = None
    if text:
        try:
            values = json.loads(text)
        except ValueError:
            raise ConfigError("%s is not valid JSON: rewrite it (etp firmware flash)" % path)
        config.update(_decode(values))
    if overrides:
        config.update(_decode(overrides))
    return config


def to_json(config):
    """JSON text of a config dict with binary keys hex-encoded (what `load` reads back)."""
    out = {}
    for name, value in config.items():
        if isinstance(value, (bytes, bytearray)):
            value = "".join("%02x" % b for b in value)
        out[name] = value
    return json.dumps(out)
