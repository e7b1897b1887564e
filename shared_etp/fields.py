"""The field and per-type tables frames are checked against (re-exported by schema.py).

Kept apart from schema.py so a board loads only these flat tables, not the named constants:
see schema.py for the message types, reason and health codes, and units.
"""

from shared_etp.compat import const

# The fields by CBOR key: FIELD_NAMES[key] is the name, FIELD_LOW/FIELD_HIGH[key] the range.
# Keys are small non-negative integers, so RFC 8949 bytewise key order equals numeric order and
# equals cbor2's canonical order. (Flat tuples: a board pays little heap for them. The
# dict/tuple views FIELDS, FIELD_KEY, FIELD_NAME, FIELD_RANGE, HEADER_FIELDS, REQUIRED are built
# in shared_etp.names, which only the hub loads; on CPython they are importable from here too.)
FIELD_NAMES = (
    # header
    "v",  # 0 protocol version
    "t",  # 1 message type
    "id",  # 2 message id (legacy messageID); responses echo the request's id
    "src",  # 3 sender id (legacy deviceID); 0 is the hub
    "dst",  # 4 recipient id; 0 = hub / everyone on the topic
    "kid",  # 5 key id of the HMAC key
    "ep",  # 6 sender boot epoch (survives reboots, see replay.py)
    "seq",  # 7 per-sender sequence number within the epoch
    "ts",  # 8 sender timestamp, ms since the Unix epoch
    "ttl",  # 9 time to live in ms after ts; 0 = the type's deadline
    "pri",  # 10 priority, 0 most urgent
    "auc",  # 11 auction id
    # payload: the Go prototype's ten payload fields, scaled to integers
    "price",  # 12 bidPrice, milli-cents per kWh
    "sale",  # 13 salePrice (the seller's reserve), milli-cents per kWh
    "etot",  # 14 energyTotal, Wh
    "pct",  # 15 percentageForSale, hundredths of a percent
    "ereq",  # 16 requiredEnergyAmount, Wh
    "term",  # 17 terminationCode
    "erem",  # 18 remainingBatteryEnergy, Wh
    "health",  # 19 batteryHealthStatusCode
    "volt",  # 20 batteryVoltage, mV
    "dis",  # 21 dischargeRate, W (negative while charging)
    # payload: new in protocol version 1
    "reason",  # 22 reason code (BidReject, DeviceFailure, Terminate)
    "soc",  # 23 state of charge, hundredths of a percent
    "round",  # 24 auction round
)
_U32 = const(0xFFFFFFFF)
_U40 = const((1 << 40) - 1)
# fmt: off
FIELD_LOW = (1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0x80000000, 0, 0, 0)
FIELD_HIGH = (
    255, 9, _U32, _U32, _U32, 0xFFFF, _U32, _U32, (1 << 53) - 1, 86400000, 255, _U32,
    0x7FFFFFFF, 0x7FFFFFFF, _U40, 10000, _U40, 255, _U40, 255, 2000000, 0x7FFFFFFF,
    255, 10000, 0xFFFF,
)
# fmt: on
HEADER_MASK = const(0x7FF)  # bits of the header keys 0..10: every message carries them

# Fields each type must carry beyond the header, as bits of their keys (REQUIRED in names.py
# spells them out): register (birth); query; query_response; bid; bid_accept (energy now held
# for the bidder); bid_confirm (the buyer commits; the trade is final); bid_reject; terminate;
# device_failure; bess_status.
REQUIRED_MASK = (
    1 << 14 | 1 << 15 | 1 << 13 | 1 << 18 | 1 << 19,
    0,
    1 << 14 | 1 << 15 | 1 << 13 | 1 << 18 | 1 << 19 | 1 << 20 | 1 << 21 | 1 << 23,
    1 << 11 | 1 << 12 | 1 << 16,
    1 << 11 | 1 << 12 | 1 << 16,
    1 << 11 | 1 << 12 | 1 << 16,
    1 << 11 | 1 << 22,
    1 << 17,
    1 << 19 | 1 << 22,
    1 << 18 | 1 << 19 | 1 << 20 | 1 << 21 | 1 << 23,
)

# Priorities (paper): 0 is the most urgent.
PRIORITY = (80, 65, 70, 20, 5, 10, 15, 2, 0, 60)

# Per-type deadlines in ms (paper): how long handling/delivery of this message type may take.
# Query and Bid carry the deadline of the answer they ask for; Terminate is as urgent as a
# confirmation.
DEADLINE_MS = (5000, 500, 500, 500, 500, 500, 500, 500, 200, 2000)

